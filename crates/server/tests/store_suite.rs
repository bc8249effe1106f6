//! openraft's storage conformance suite over the redb log store and the state machine
//! store, each built in a fresh temporary directory.

use fencelock_server::raft::{NodeId, TypeConfig};
use fencelock_server::store::{
    LogStore, LogStoreOptions, NoObserver, SharedState, StateMachineStore,
};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use std::sync::Arc;
use tempfile::TempDir;

struct TempStores {
    options: LogStoreOptions,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log =
            LogStore::open(&dir.path().join("log"), self.options.clone()).expect("open log store");
        let state_machine = StateMachineStore::open(
            &dir.path().join("snapshots"),
            SharedState::new(Arc::new(NoObserver)),
        )
        .expect("open state machine store");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn openraft_suite_passes() {
    Suite::test_all(TempStores {
        options: LogStoreOptions::default(),
    })
    .expect("suite");
}

/// The same suite with the tail cache off, so every read goes to redb.
#[test]
fn openraft_suite_passes_without_cache() {
    Suite::test_all(TempStores {
        options: LogStoreOptions {
            cache_entries_max: 0,
            cache_bytes_max: 0,
            ..LogStoreOptions::default()
        },
    })
    .expect("suite");
}

/// And with a cache smaller than the suite's logs, so reads straddle cache and disk.
#[test]
fn openraft_suite_passes_with_small_cache() {
    Suite::test_all(TempStores {
        options: LogStoreOptions {
            cache_entries_max: 3,
            cache_bytes_max: 1 << 20,
            ..LogStoreOptions::default()
        },
    })
    .expect("suite");
}
