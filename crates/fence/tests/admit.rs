//! Admit, refuse and equal-token behaviour, run against both backends.

use fencelock_fence::{
    Decision, DurableFence, Fence, FenceError, FenceRecord, FencingToken, MemoryFence,
    ResourceTable,
};

const LOCK: &str = "locks/orders";

/// A backend-independent handle, so each test is written once.
enum Runner {
    Memory(MemoryFence),
    Durable(DurableFence, tempfile::TempDir),
}

fn backends() -> Vec<Runner> {
    let directory = tempfile::tempdir().expect("tempdir");
    let durable = DurableFence::open(directory.path().join("fence.redb")).expect("open");
    vec![
        Runner::Memory(MemoryFence::new()),
        Runner::Durable(durable, directory),
    ]
}

/// Calls `$body` with `$fence` bound to each backend in turn.
macro_rules! for_each_backend {
    (|$fence:ident| $body:block) => {
        for runner in backends() {
            match &runner {
                Runner::Memory($fence) => $body,
                Runner::Durable($fence, _directory) => $body,
            }
        }
    };
}

fn write(value: &'static [u8]) -> impl FnOnce(&mut dyn ResourceTable) -> Result<(), String> {
    move |table| {
        table
            .insert(b"value", value)
            .map_err(|error| error.to_string())?;
        Ok(())
    }
}

#[test]
fn first_token_is_admitted_and_binds_the_resource() {
    for_each_backend!(|fence| {
        assert_eq!(fence.record("orders/1").unwrap(), None);
        let admitted = fence
            .admit("orders/1", LOCK, FencingToken(5), write(b"a"))
            .unwrap();
        assert_eq!(
            admitted.decision(),
            Decision::Admitted {
                token: FencingToken(5),
                previous: None
            }
        );
        assert_eq!(
            fence.record("orders/1").unwrap(),
            Some(FenceRecord {
                lock: LOCK.to_owned(),
                highest_seen: FencingToken(5)
            })
        );
        assert_eq!(fence.get(b"value").unwrap(), Some(b"a".to_vec()));
    });
}

#[test]
fn higher_and_equal_tokens_are_admitted() {
    for_each_backend!(|fence| {
        fence
            .admit("orders/1", LOCK, FencingToken(5), write(b"a"))
            .unwrap();
        let equal = fence
            .admit("orders/1", LOCK, FencingToken(5), write(b"b"))
            .unwrap();
        assert_eq!(equal.previous, Some(FencingToken(5)));
        let higher = fence
            .admit("orders/1", LOCK, FencingToken(9), write(b"c"))
            .unwrap();
        assert_eq!(higher.previous, Some(FencingToken(5)));
        assert_eq!(fence.get(b"value").unwrap(), Some(b"c".to_vec()));
        assert_eq!(
            fence.record("orders/1").unwrap().unwrap().highest_seen,
            FencingToken(9)
        );
    });
}

#[test]
fn lower_token_is_refused_and_writes_nothing() {
    for_each_backend!(|fence| {
        fence
            .admit("orders/1", LOCK, FencingToken(9), write(b"new"))
            .unwrap();
        let mut ran = false;
        let refused = fence.admit("orders/1", LOCK, FencingToken(8), |table| {
            ran = true;
            write(b"stale")(table)
        });
        let error = refused.unwrap_err();
        assert!(!ran, "a refused operation must not run");
        assert!(error.is_refusal());
        assert_eq!(
            error.decision(),
            Some(Decision::Refused {
                token: FencingToken(8),
                highest_seen: FencingToken(9)
            })
        );
        assert!(matches!(
            &error,
            FenceError::Refused { resource, token: FencingToken(8), highest_seen: FencingToken(9) }
                if resource == "orders/1"
        ));
        assert_eq!(fence.get(b"value").unwrap(), Some(b"new".to_vec()));
        assert_eq!(
            fence.record("orders/1").unwrap().unwrap().highest_seen,
            FencingToken(9)
        );
    });
}

#[test]
fn resources_are_fenced_independently() {
    for_each_backend!(|fence| {
        fence
            .admit_token("orders/1", LOCK, FencingToken(100))
            .unwrap();
        // A low token on another resource, even under the same lock, is not compared
        // with the first resource's.
        let other = fence
            .admit_token("orders/2", LOCK, FencingToken(3))
            .unwrap();
        assert_eq!(other.previous, None);
        assert!(
            fence
                .admit_token("orders/2", LOCK, FencingToken(2))
                .is_err()
        );
        assert!(
            fence
                .admit_token("orders/1", LOCK, FencingToken(99))
                .is_err()
        );
        assert_eq!(
            fence.record("orders/1").unwrap().unwrap().highest_seen,
            FencingToken(100)
        );
        assert_eq!(
            fence.record("orders/2").unwrap().unwrap().highest_seen,
            FencingToken(3)
        );
    });
}

#[test]
fn token_under_another_lock_is_refused() {
    for_each_backend!(|fence| {
        fence
            .admit_token("orders/1", LOCK, FencingToken(5))
            .unwrap();
        let error = fence
            .admit_token("orders/1", "locks/other", FencingToken(50))
            .unwrap_err();
        assert!(error.is_refusal());
        assert_eq!(error.decision(), None);
        assert!(matches!(
            &error,
            FenceError::WrongLock { bound_lock, presented_lock, .. }
                if bound_lock == LOCK && presented_lock == "locks/other"
        ));
        assert_eq!(
            fence.record("orders/1").unwrap(),
            Some(FenceRecord {
                lock: LOCK.to_owned(),
                highest_seen: FencingToken(5)
            })
        );
    });
}

#[test]
fn bind_moves_a_resource_to_another_lock_keeping_its_highest_token() {
    for_each_backend!(|fence| {
        // Bound up front: tokens of other locks are refused from the first write.
        assert_eq!(fence.bind("orders/1", LOCK).unwrap(), None);
        assert!(
            fence
                .admit_token("orders/1", "locks/other", FencingToken(1))
                .is_err()
        );
        fence
            .admit_token("orders/1", LOCK, FencingToken(7))
            .unwrap();

        let previous = fence.bind("orders/1", "locks/new").unwrap();
        assert_eq!(
            previous,
            Some(FenceRecord {
                lock: LOCK.to_owned(),
                highest_seen: FencingToken(7)
            })
        );
        assert!(matches!(
            fence.admit_token("orders/1", LOCK, FencingToken(8)),
            Err(FenceError::WrongLock { .. })
        ));
        assert!(matches!(
            fence.admit_token("orders/1", "locks/new", FencingToken(6)),
            Err(FenceError::Refused { .. })
        ));
        fence
            .admit_token("orders/1", "locks/new", FencingToken(7))
            .unwrap();
    });
}

#[test]
fn failing_operation_records_nothing() {
    for_each_backend!(|fence| {
        fence
            .admit("orders/1", LOCK, FencingToken(5), write(b"kept"))
            .unwrap();
        let failed = fence.admit("orders/1", LOCK, FencingToken(6), |table| {
            table
                .insert(b"value", b"lost")
                .map_err(|error| error.to_string())?;
            table
                .insert(b"other", b"lost")
                .map_err(|error| error.to_string())?;
            Err::<(), _>("the resource rejected the write".to_owned())
        });
        let error = failed.unwrap_err();
        assert!(!error.is_refusal());
        assert!(matches!(&error, FenceError::Operation(message) if message.contains("rejected")));
        // Neither the token nor the data moved.
        assert_eq!(
            fence.record("orders/1").unwrap().unwrap().highest_seen,
            FencingToken(5)
        );
        assert_eq!(fence.get(b"value").unwrap(), Some(b"kept".to_vec()));
        assert_eq!(fence.get(b"other").unwrap(), None);
        // Token 5 is still admissible, as nothing was recorded for 6.
        fence
            .admit_token("orders/1", LOCK, FencingToken(5))
            .unwrap();
    });
}

#[test]
fn failing_first_operation_leaves_the_resource_unbound() {
    for_each_backend!(|fence| {
        let failed = fence.admit("orders/1", LOCK, FencingToken(5), |_| Err::<(), _>("no"));
        assert!(matches!(failed, Err(FenceError::Operation("no"))));
        assert_eq!(fence.record("orders/1").unwrap(), None);
        fence
            .admit_token("orders/1", "locks/other", FencingToken(1))
            .unwrap();
    });
}

#[test]
fn panicking_operation_records_nothing_and_the_fence_keeps_working() {
    for_each_backend!(|fence| {
        fence
            .admit("orders/1", LOCK, FencingToken(5), write(b"kept"))
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = fence.admit(
                "orders/1",
                LOCK,
                FencingToken(6),
                |table| -> Result<(), String> {
                    table
                        .insert(b"value", b"lost")
                        .map_err(|error| error.to_string())?;
                    panic!("operation panicked");
                },
            );
        }));
        assert!(panicked.is_err());
        assert_eq!(
            fence.record("orders/1").unwrap().unwrap().highest_seen,
            FencingToken(5)
        );
        assert_eq!(fence.get(b"value").unwrap(), Some(b"kept".to_vec()));
        fence
            .admit_token("orders/1", LOCK, FencingToken(6))
            .unwrap();
    });
}

#[test]
fn operation_reads_its_own_writes_and_sees_committed_data() {
    for_each_backend!(|fence| {
        fence
            .admit("orders/1", LOCK, FencingToken(1), write(b"committed"))
            .unwrap();
        let admitted = fence
            .admit(
                "orders/1",
                LOCK,
                FencingToken(2),
                |table| -> Result<_, String> {
                    let error = |error: fencelock_fence::StorageError| error.to_string();
                    let before = table.get(b"value").map_err(error)?;
                    let replaced = table.insert(b"value", b"staged").map_err(error)?;
                    let during = table.get(b"value").map_err(error)?;
                    let removed = table.remove(b"value").map_err(error)?;
                    let after = table.get(b"value").map_err(error)?;
                    Ok((before, replaced, during, removed, after))
                },
            )
            .unwrap();
        let committed = Some(b"committed".to_vec());
        let staged = Some(b"staged".to_vec());
        assert_eq!(
            admitted.output,
            (committed.clone(), committed, staged.clone(), staged, None)
        );
        assert_eq!(fence.get(b"value").unwrap(), None);
    });
}

#[test]
fn extreme_tokens_are_ordinary() {
    for_each_backend!(|fence| {
        fence.admit_token("r", LOCK, FencingToken(0)).unwrap();
        fence
            .admit_token("r", LOCK, FencingToken(u64::MAX))
            .unwrap();
        fence
            .admit_token("r", LOCK, FencingToken(u64::MAX))
            .unwrap();
        assert!(
            fence
                .admit_token("r", LOCK, FencingToken(u64::MAX - 1))
                .is_err()
        );
    });
}
