//! Many threads presenting tokens for one resource at once.

use std::sync::Mutex;

use fencelock_fence::{DurableFence, Fence, FenceError, FencingToken, MemoryFence};

const THREADS: u64 = 8;
const LOCK: &str = "locks/shared";

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Tokens(u64);

impl Tokens {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

fn hammer(fence: &(impl Fence + Sync), presentations_per_thread: u64) {
    // Tokens in the order the fence admitted them: pushed inside the operation, which runs
    // while the fence is held, so this is the fence's own order.
    let admitted_in_order = Mutex::new(Vec::new());
    let presented_max = Mutex::new(0u64);

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (fence, admitted_in_order, presented_max) =
                (&fence, &admitted_in_order, &presented_max);
            scope.spawn(move || {
                let mut tokens = Tokens(0x9E37_79B9_7F4A_7C15 ^ (thread + 1));
                for step in 0..presentations_per_thread {
                    // Drift upwards, with stale tokens mixed in.
                    let token = step * 4 + tokens.next(64);
                    {
                        let mut max = presented_max.lock().unwrap();
                        *max = (*max).max(token);
                    }
                    let result = fence.admit("resource", LOCK, FencingToken(token), |table| {
                        table
                            .insert(b"resource", &token.to_be_bytes())
                            .map_err(|_| ())?;
                        admitted_in_order.lock().unwrap().push(token);
                        Ok::<_, ()>(())
                    });
                    match result {
                        Ok(admitted) => {
                            assert_eq!(admitted.token, FencingToken(token));
                            assert!(
                                admitted
                                    .previous
                                    .is_none_or(|previous| previous.get() <= token)
                            );
                        }
                        Err(FenceError::Refused {
                            token: refused,
                            highest_seen,
                            ..
                        }) => {
                            assert_eq!(refused, FencingToken(token));
                            assert!(refused < highest_seen);
                        }
                        Err(error) => panic!("unexpected error: {error}"),
                    }
                }
            });
        }
    });

    let admitted_in_order = admitted_in_order.into_inner().unwrap();
    let presented_max = presented_max.into_inner().unwrap();
    assert!(
        admitted_in_order.windows(2).all(|pair| pair[0] <= pair[1]),
        "a lower token was admitted after a higher one: {admitted_in_order:?}"
    );
    assert_eq!(admitted_in_order.last().copied(), Some(presented_max));
    let record = fence.record("resource").unwrap().unwrap();
    assert_eq!(record.highest_seen, FencingToken(presented_max));
    assert_eq!(
        fence.get(b"resource").unwrap(),
        Some(presented_max.to_be_bytes().to_vec())
    );
}

#[test]
fn memory_fence_under_contention() {
    hammer(&MemoryFence::new(), 2_000);
}

#[test]
fn durable_fence_under_contention() {
    let directory = tempfile::tempdir().unwrap();
    let fence = DurableFence::open(directory.path().join("fence.redb")).unwrap();
    hammer(&fence, 100);
}
