//! openraft's state machine over [`SharedState`], with snapshots on disk.
//!
//! `apply` takes the shared write lock once per entry and tells the [`ApplyObserver`]
//! about the entry under that lock. Snapshots encode the state under the read lock (no
//! copy of the state) and write the bytes after releasing it, so building one holds up
//! apply only for the encoding. The newest snapshot file is loaded at start-up; a damaged one stops start-up.
//!
//! [`ApplyObserver`]: super::ApplyObserver

use super::snapshot::{self, SnapshotDir, SnapshotMeta};
use super::{Disk, SharedState, StoreError};
use crate::commit_trace::{CommitTrace, Point};
use crate::raft::{
    AppliedCommand, BatchResult, CommandBatch, LogId, NodeId, StoredMembership, TypeConfig,
};
use crate::space::DiskSpace;
use fencelock_core::{Response, SessionId};
use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageError, StorageIOError};
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The Raft state machine: applies entries to the [`SharedState`] and keeps its snapshot
/// on disk.
#[derive(Debug)]
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    snapshots: Arc<Snapshots>,
    /// Where each applied entry is marked (off unless [`Self::with_commit_trace`]).
    trace: CommitTrace,
}

/// Builds snapshots of the state machine (openraft runs it in its own task).
#[derive(Debug)]
pub struct StateMachineSnapshotBuilder {
    shared: Arc<SharedState>,
    snapshots: Arc<Snapshots>,
}

#[derive(Debug)]
struct Snapshots {
    dir: SnapshotDir,
    /// The snapshot on disk. The lock is held while a file is written, so a build and an
    /// install never interleave their writes.
    current: Mutex<Option<SnapshotMeta>>,
    /// Makes snapshot ids unique: seeded from the clock at open, so ids stay unique
    /// across restarts too.
    next_id: AtomicU64,
    /// Free space on the data disk: a snapshot the full disk refused waits here.
    space: Arc<DiskSpace>,
}

/// Whether a snapshot replaces a newer one on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replace {
    /// A snapshot built from the local state: skipped if a newer one (an install that
    /// raced the build) is already on disk.
    IfNotOlder,
    /// A snapshot from the leader: always replaces.
    Always,
}

impl Snapshots {
    fn new_id(&self, last_log_id: Option<LogId>) -> String {
        let (term, index) = last_log_id.map_or((0, 0), |id| (id.leader_id.term, id.index));
        let counter = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{term}-{index}-{counter}")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SnapshotMeta>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Persist `bytes` as the current snapshot; returns whether it was written.
    fn persist(
        &self,
        meta: &SnapshotMeta,
        bytes: &[u8],
        replace: Replace,
    ) -> Result<bool, StoreError> {
        let mut current = self.lock();
        if replace == Replace::IfNotOlder
            && current
                .as_ref()
                .is_some_and(|c| c.last_log_id > meta.last_log_id)
        {
            return Ok(false);
        }
        // A full disk refused the snapshot: wait for space and write it again (a fresh
        // temporary file each time). Meanwhile openraft builds no other snapshot and
        // purges no log for this one, so nothing depends on it yet. Any other I/O error
        // stops the node (see `crate::space`).
        let path = self.dir.file_path(meta);
        let written = self.space.until_space(
            "writing a snapshot",
            &path,
            StoreError::is_retryable_write,
            || self.dir.write(meta, bytes),
        );
        match written {
            Ok(()) => {}
            Err(e) if e.is_os_failure() => {
                return Err(crate::space::stop_on_unknown_durability(
                    &path,
                    "writing a snapshot",
                    e,
                ));
            }
            Err(e) => return Err(e),
        }
        *current = Some(meta.clone());
        Ok(true)
    }
}

impl StateMachineStore {
    /// Open the state machine over `shared`, with snapshots in `snapshot_dir` (created if
    /// missing). If a snapshot is on disk, the newest one replaces `shared`'s state, last
    /// applied log id and membership. Either way the observer is then told `reset`.
    ///
    /// # Errors
    /// The directory cannot be created or read, or the newest snapshot file is damaged
    /// ([`StoreError::CorruptSnapshotFile`] names it; older files are not used instead).
    pub fn open(snapshot_dir: &Path, shared: Arc<SharedState>) -> Result<Self, StoreError> {
        Self::open_on(&Disk::for_dir(snapshot_dir), snapshot_dir, shared)
    }

    /// [`StateMachineStore::open`] with the files on `disk`.
    ///
    /// # Errors
    /// As [`StateMachineStore::open`].
    pub fn open_on(
        disk: &Disk,
        snapshot_dir: &Path,
        shared: Arc<SharedState>,
    ) -> Result<Self, StoreError> {
        Self::open_sharing_space(disk, snapshot_dir, shared, Arc::new(DiskSpace::default()))
    }

    /// [`StateMachineStore::open_on`], with snapshot writes that a full disk refused
    /// waiting for space in `space` (the node shares its log store's, so its alarm is up
    /// while one waits).
    ///
    /// # Errors
    /// As [`StateMachineStore::open`].
    pub fn open_sharing_space(
        disk: &Disk,
        snapshot_dir: &Path,
        shared: Arc<SharedState>,
        space: Arc<DiskSpace>,
    ) -> Result<Self, StoreError> {
        let dir = SnapshotDir::open(disk, snapshot_dir)?;
        let loaded = dir.load_newest()?;
        let current = loaded.as_ref().map(|content| content.meta.clone());
        shared.write(|applied, observer| {
            if let Some(content) = loaded {
                applied.state = content.state;
                applied.last_applied = content.meta.last_log_id;
                applied.last_membership = content.meta.last_membership;
            }
            observer.reset(applied);
        });
        let clock_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(StateMachineStore {
            shared,
            snapshots: Arc::new(Snapshots {
                dir,
                current: Mutex::new(current),
                next_id: AtomicU64::new(clock_micros),
                space,
            }),
            trace: CommitTrace::off(),
        })
    }

    /// Mark each applied entry on `trace`.
    #[must_use]
    pub fn with_commit_trace(mut self, trace: CommitTrace) -> Self {
        self.trace = trace;
        self
    }

    /// The shared applied state.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// The snapshot directory.
    pub fn snapshot_dir(&self) -> &Path {
        self.snapshots.dir.path()
    }

    /// Metadata of the snapshot on disk, if any.
    pub fn current_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.snapshots.lock().clone()
    }

    /// Apply one entry under one write lock, telling the observer.
    fn apply_entry(
        &self,
        entry: Entry<TypeConfig>,
        events: &mut Vec<fencelock_core::Event>,
    ) -> BatchResult {
        let log_id = entry.log_id;
        self.shared.write(|applied, observer| {
            assert!(
                applied.last_applied < Some(log_id),
                "entry {log_id} applied after {:?}",
                applied.last_applied
            );
            events.clear();
            let result = match entry.payload {
                EntryPayload::Blank => BatchResult::default(),
                EntryPayload::Normal(CommandBatch(commands)) => BatchResult(
                    commands
                        .into_iter()
                        .map(|command| {
                            let result = applied.state.apply(command, events);
                            if let Ok(Response::Queued { session }) = &result {
                                observer.queued(*session, applied);
                            }
                            let session_ttl_ms = result
                                .as_ref()
                                .ok()
                                .and_then(answered_session)
                                .and_then(|session| applied.state.session_ttl_ms(session));
                            AppliedCommand {
                                result,
                                session_ttl_ms,
                            }
                        })
                        .collect(),
                ),
                EntryPayload::Membership(membership) => {
                    applied.last_membership = StoredMembership::new(Some(log_id), membership);
                    BatchResult::default()
                }
            };
            applied.last_applied = Some(log_id);
            observer.applied(log_id.index, events, applied);
            result
        })
    }
}

/// The session a response names, whose TTL the caller reports beside it.
fn answered_session(response: &Response) -> Option<SessionId> {
    match response {
        Response::Granted { session, .. }
        | Response::GrantedLocks { session, .. }
        | Response::Queued { session }
        | Response::WouldBlock { session }
        | Response::SessionOpened { session, .. } => Some(*session),
        _ => None,
    }
}

impl StateMachineSnapshotBuilder {
    fn build(&self) -> Result<Snapshot<TypeConfig>, StoreError> {
        // Encode straight from the shared state under its read lock. Cloning the state
        // first would hold up apply about as long (a clone of a million locks takes
        // ~2/3 of the time encoding does) and doubles the state's memory while the
        // snapshot is written, memory the allocator then keeps.
        let (meta, bytes) = self.shared.read(|applied| {
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
                snapshot_id: self.snapshots.new_id(applied.last_applied),
            };
            let bytes = snapshot::encode(&meta, &applied.state);
            (meta, bytes)
        });
        let bytes = bytes?;
        self.snapshots.persist(&meta, &bytes, Replace::IfNotOlder)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Encoding and fsyncing a large state must not stall a runtime worker.
        let builder = StateMachineSnapshotBuilder {
            shared: Arc::clone(&self.shared),
            snapshots: Arc::clone(&self.snapshots),
        };
        tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        Ok(self
            .shared
            .read(|applied| (applied.last_applied, applied.last_membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries = entries.into_iter();
        let mut results = Vec::with_capacity(entries.size_hint().0);
        let mut events = Vec::new();
        for entry in entries {
            self.trace.mark(Point::Applied, entry.log_id.index);
            results.push(self.apply_entry(entry, &mut events));
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineSnapshotBuilder {
            shared: Arc::clone(&self.shared),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let (shared, snapshots) = (Arc::clone(&self.shared), Arc::clone(&self.snapshots));
        let owned_meta = meta.clone();
        // Decoding and fsyncing a large snapshot must not stall a runtime worker.
        tokio::task::spawn_blocking(move || install(&shared, &snapshots, &owned_meta, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.snapshots.lock();
        let Some(meta) = current.as_ref() else {
            return Ok(None);
        };
        let bytes = self
            .snapshots
            .dir
            .read(meta)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        Ok(Some(Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// Check, persist and install a snapshot received from the leader.
fn install(
    shared: &SharedState,
    snapshots: &Snapshots,
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let content = snapshot::decode(bytes).map_err(|e| StoreError::InvalidSnapshot {
        reason: e.to_string(),
    })?;
    let decoded = started.elapsed();
    if content.meta != *meta {
        return Err(StoreError::InvalidSnapshot {
            reason: format!(
                "its bytes describe {:?}, its metadata says {meta:?}",
                content.meta
            ),
        });
    }
    snapshots.persist(meta, bytes, Replace::Always)?;
    shared.write(|applied, observer| {
        applied.state = content.state;
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        observer.reset(applied);
    });
    tracing::info!(
        bytes = bytes.len(),
        index = meta.last_log_id.map_or(0, |id| id.index),
        decode_ms = decoded.as_millis() as u64,
        install_ms = started.elapsed().as_millis() as u64,
        "snapshot installed"
    );
    Ok(())
}
