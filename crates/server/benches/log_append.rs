//! Micro-benchmarks of the Raft log store's append path, with 1, 16 or 256 lock commands
//! per entry and 1 or 64 entries per append (openraft hands the store everything queued
//! since the last flush): `append_fsync` as configured by default (one write and one data
//! sync of the write-ahead file per `append()`, and a redb checkpoint each time the file
//! fills), `append_fsync_redb_only` without the write-ahead file (one redb write
//! transaction and fsync per `append()`). Run with
//! `cargo bench -p fencelock-server --bench log_append`; the disk's sync latency is most
//! of the single-entry figure.

use fencelock_core::{Command, FencingToken, LockMode, RequestId, SessionId, WaitPolicy};
use fencelock_server::raft::{CommandBatch, LogId, TypeConfig};
use fencelock_server::store::{LogStore, LogStoreOptions};
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload};

fn main() {
    divan::main();
}

/// `commands` acquire/release commands, the shape of a batched entry under load.
fn batch(commands: usize) -> CommandBatch {
    CommandBatch(
        (0..commands as u64)
            .map(|i| {
                let request = RequestId {
                    seq: i + 1,
                    first_unanswered_seq: i + 1,
                };
                let name = format!("bench/lock-{i}");
                if i % 2 == 0 {
                    Command::Acquire {
                        session: SessionId(i + 1),
                        request,
                        name,
                        mode: LockMode::Exclusive,
                        wait: WaitPolicy::Queue,
                        value: Vec::new(),
                    }
                } else {
                    Command::Release {
                        session: SessionId(i + 1),
                        request,
                        name,
                        token: FencingToken(i),
                    }
                }
            })
            .collect(),
    )
}

/// Appends `entries_per_append` entries of `commands` commands each, durably (the
/// callback fires after the sync), per iteration.
#[divan::bench(args = [(1, 1), (1, 16), (1, 256), (64, 1), (64, 16)])]
fn append_fsync(bencher: divan::Bencher, shape: (u64, usize)) {
    appends(bencher, shape, LogStoreOptions::default());
}

/// The same without the write-ahead file.
#[divan::bench(args = [(1, 1), (1, 16), (1, 256), (64, 1), (64, 16)])]
fn append_fsync_redb_only(bencher: divan::Bencher, shape: (u64, usize)) {
    let options = LogStoreOptions {
        wal_bytes: 0,
        ..LogStoreOptions::default()
    };
    appends(bencher, shape, options);
}

fn appends(
    bencher: divan::Bencher,
    (entries_per_append, commands): (u64, usize),
    options: LogStoreOptions,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = LogStore::open(dir.path(), options).expect("open log");
    let payload = batch(commands);
    let mut next = 1u64;
    bencher.bench_local(|| {
        let entries: Vec<Entry<TypeConfig>> = (0..entries_per_append)
            .map(|k| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), next + k),
                payload: EntryPayload::Normal(payload.clone()),
            })
            .collect();
        next += entries_per_append;
        runtime
            .block_on(store.blocking_append(entries))
            .expect("append");
    });
}
