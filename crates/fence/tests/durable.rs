//! The durable backend across restarts, and its transaction API.

use fencelock_fence::redb::{ReadableDatabase, TableDefinition};
use fencelock_fence::{DurableFence, Fence, FenceError, FenceRecord, FencingToken};

const LOCK: &str = "locks/ledger";
const ENTRIES: TableDefinition<u64, &str> = TableDefinition::new("ledger_entries");

#[test]
fn tokens_and_data_survive_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fence.redb");
    {
        let fence = DurableFence::open(&path).unwrap();
        fence
            .admit("ledger", LOCK, FencingToken(41), |table| {
                table.insert(b"k", b"41")
            })
            .unwrap();
        fence
            .admit_token("other", "locks/other", FencingToken(3))
            .unwrap();
        let failed = fence.admit("ledger", LOCK, FencingToken(50), |table| {
            table
                .insert(b"k", b"50")
                .map_err(|error| error.to_string())?;
            Err::<(), _>("failed after writing".to_owned())
        });
        assert!(matches!(failed, Err(FenceError::Operation(_))));
    }
    let fence = DurableFence::open(&path).unwrap();
    assert_eq!(
        fence.record("ledger").unwrap(),
        Some(FenceRecord {
            lock: LOCK.to_owned(),
            highest_seen: FencingToken(41)
        })
    );
    assert_eq!(fence.record("other").unwrap().unwrap().lock, "locks/other");
    assert_eq!(fence.get(b"k").unwrap(), Some(b"41".to_vec()));
    assert!(matches!(
        fence.admit_token("ledger", LOCK, FencingToken(40)),
        Err(FenceError::Refused {
            highest_seen: FencingToken(41),
            ..
        })
    ));
    assert!(matches!(
        fence.admit_token("ledger", "locks/other", FencingToken(90)),
        Err(FenceError::WrongLock { .. })
    ));
    let admitted = fence.admit_token("ledger", LOCK, FencingToken(41)).unwrap();
    assert_eq!(admitted.previous, Some(FencingToken(41)));
}

#[test]
fn bind_survives_reopen() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fence.redb");
    DurableFence::open(&path)
        .unwrap()
        .bind("ledger", LOCK)
        .unwrap();
    let fence = DurableFence::open(&path).unwrap();
    assert_eq!(
        fence.record("ledger").unwrap(),
        Some(FenceRecord {
            lock: LOCK.to_owned(),
            highest_seen: FencingToken(0)
        })
    );
}

#[test]
fn own_tables_commit_with_the_token_in_one_transaction() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fence.redb");
    {
        let fence = DurableFence::open(&path).unwrap();
        fence
            .admit_in_transaction("ledger", LOCK, FencingToken(7), |transaction| {
                let mut entries = transaction.open_table(ENTRIES)?;
                entries.insert(1, "credit 10")?;
                Ok::<_, fencelock_fence::redb::Error>(())
            })
            .unwrap();
        let failed = fence.admit_in_transaction("ledger", LOCK, FencingToken(8), |transaction| {
            let mut entries = transaction.open_table(ENTRIES)?;
            entries.insert(2, "debit 99")?;
            Err::<(), _>(fencelock_fence::redb::Error::Corrupted(
                "rejected".to_owned(),
            ))
        });
        assert!(matches!(failed, Err(FenceError::Operation(_))));
        let stale = fence.admit_in_transaction("ledger", LOCK, FencingToken(6), |_| {
            Ok::<_, fencelock_fence::redb::Error>(())
        });
        assert!(matches!(stale, Err(FenceError::Refused { .. })));
    }
    let fence = DurableFence::open(&path).unwrap();
    assert_eq!(
        fence.record("ledger").unwrap().unwrap().highest_seen,
        FencingToken(7)
    );
    let read = fence.database().begin_read().unwrap();
    let entries = read.open_table(ENTRIES).unwrap();
    assert_eq!(entries.get(1).unwrap().unwrap().value(), "credit 10");
    assert!(entries.get(2).unwrap().is_none());
}

#[test]
fn operation_cannot_open_the_token_table() {
    let directory = tempfile::tempdir().unwrap();
    let fence = DurableFence::open(directory.path().join("fence.redb")).unwrap();
    const TOKENS: TableDefinition<&str, (u64, &str)> =
        TableDefinition::new("fencelock_fence_tokens");
    let tampered = fence.admit_in_transaction("ledger", LOCK, FencingToken(7), |transaction| {
        transaction.open_table(TOKENS).map(|_| ())
    });
    assert!(matches!(tampered, Err(FenceError::Operation(_))));
    assert_eq!(fence.record("ledger").unwrap(), None);
}

#[test]
fn opening_a_database_twice_is_a_storage_error() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("fence.redb");
    let _open = DurableFence::open(&path).unwrap();
    let error = DurableFence::open(&path).unwrap_err();
    assert!(
        error.to_string().contains("fence storage failed"),
        "{error}"
    );
}
