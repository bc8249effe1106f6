//! Durable storage: the Raft log and vote (redb), and the in-memory state machine with
//! its snapshots on disk.
//!
//! The state machine lives in [`SharedState`], shared between openraft's apply path
//! (which holds the write lock for one entry at a time) and the server's readers. An
//! [`ApplyObserver`] sees every applied entry's events while the write lock is held, so a
//! reader that checks the state and registers interest under the same lock never misses
//! a change.

pub mod backup;
pub mod check;
pub mod disk;
pub mod error;
pub mod log;
pub mod record;
pub mod restore;
#[cfg(feature = "test-support")]
pub mod sim;
pub mod snapshot;
pub mod state_machine;
pub mod wal;

pub use disk::{Disk, DiskFile};
pub use error::StoreError;
pub use log::{LogStore, LogStoreOptions};
pub use state_machine::{StateMachineSnapshotBuilder, StateMachineStore};

use crate::raft::{LogId, StoredMembership};
use fencelock_core::{Event, SessionId, State};
use std::sync::{Arc, RwLock};

/// The applied state and what Raft needs to know about it.
#[derive(Debug, Default)]
pub struct Applied {
    /// The lock state machine.
    pub state: State,
    /// The last log id applied (None before the first).
    pub last_applied: Option<LogId>,
    /// The last membership config applied.
    pub last_membership: StoredMembership,
}

/// Told about every change of the applied state, under its write lock.
pub trait ApplyObserver: Send + Sync + 'static {
    /// Entry `index` was applied and emitted `events` (possibly none); `applied` is the
    /// state after it.
    fn applied(&self, index: u64, events: &[Event], applied: &Applied);
    /// The whole state was replaced (a snapshot was installed or loaded at start-up).
    fn reset(&self, applied: &Applied);
    /// A command of the entry being applied queued a wait of `session`; `applied` is the
    /// state right after that command (before [`ApplyObserver::applied`] for the whole
    /// entry).
    fn queued(&self, _session: SessionId, _applied: &Applied) {}
}

/// An observer that ignores everything (tests, tools).
#[derive(Debug, Default)]
pub struct NoObserver;

impl ApplyObserver for NoObserver {
    fn applied(&self, _index: u64, _events: &[Event], _applied: &Applied) {}
    fn reset(&self, _applied: &Applied) {}
}

/// The state machine shared by the apply path and the readers.
pub struct SharedState {
    applied: RwLock<Applied>,
    observer: Arc<dyn ApplyObserver>,
}

impl SharedState {
    /// An empty state that reports to `observer`.
    pub fn new(observer: Arc<dyn ApplyObserver>) -> Arc<Self> {
        Arc::new(SharedState {
            applied: RwLock::new(Applied::default()),
            observer,
        })
    }

    /// Read the applied state. Keep the closure short: apply waits for it.
    pub fn read<T>(&self, read: impl FnOnce(&Applied) -> T) -> T {
        let guard = self.applied.read().unwrap_or_else(|e| e.into_inner());
        read(&guard)
    }

    /// Change the applied state (the apply path only), then tell the observer what
    /// `change` reports, all under the write lock.
    pub fn write<T>(&self, change: impl FnOnce(&mut Applied, &dyn ApplyObserver) -> T) -> T {
        let mut guard = self.applied.write().unwrap_or_else(|e| e.into_inner());
        change(&mut guard, self.observer.as_ref())
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState").finish_non_exhaustive()
    }
}
