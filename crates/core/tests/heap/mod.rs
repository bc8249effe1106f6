//! Heap accounting for the memory measurements of the state machine: a counting global
//! allocator (the `tracking-allocator` crate: the workspace forbids `unsafe` code, so
//! this crate cannot implement `GlobalAlloc` itself) and the held-locks workload. Shared by `tests/memory.rs` (an upper bound,
//! checked on every test run) and `benches/memory.rs` (the numbers at full size).
//!
//! Only the thread that builds the state allocates while it is measured, so the counts
//! are deterministic for a given toolchain: they depend on the allocation sizes of the
//! state's collections, not on timing.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fencelock_core::{
    ClientId, Command, LockMode, RequestId, Response, SessionId, State, WaitPolicy,
};
use tracking_allocator::{AllocationGroupId, AllocationRegistry, AllocationTracker};

/// The allocator to install: `#[global_allocator] static ALLOC: heap::Allocator =
/// heap::Allocator::system();`. It reports every allocation to [`Counter`].
pub type Allocator = tracking_allocator::Allocator<std::alloc::System>;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

/// The size of the chunk glibc's malloc uses for a request of `size` bytes: the request
/// plus an 8-byte header, rounded up to 16, at least 32. What the process's RSS grows by.
fn chunk(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

/// Keeps the live byte counts: requested sizes, and glibc chunk sizes (see `chunk`).
struct Counter;

impl AllocationTracker for Counter {
    fn allocated(&self, _addr: usize, size: usize, _wrapped: usize, _group: AllocationGroupId) {
        REQUESTED.fetch_add(size, Relaxed);
        CHUNKS.fetch_add(chunk(size), Relaxed);
    }

    fn deallocated(
        &self,
        _addr: usize,
        size: usize,
        _wrapped: usize,
        _source: AllocationGroupId,
        _current: AllocationGroupId,
    ) {
        REQUESTED.fetch_sub(size, Relaxed);
        CHUNKS.fetch_sub(chunk(size), Relaxed);
    }
}

/// Starts counting (once per process); allocations made before are never counted.
fn start_counting() {
    static START: Once = Once::new();
    START.call_once(|| {
        AllocationRegistry::set_global_tracker(Counter).expect("no other tracker");
        AllocationRegistry::enable_tracking();
    });
}

/// Live heap bytes, as asked for and as glibc's chunks (see `chunk`).
#[derive(Clone, Copy, Debug)]
pub struct Heap {
    /// Sum of the sizes asked for.
    pub requested: usize,
    /// Sum of the estimated malloc chunk sizes.
    pub chunks: usize,
}

impl Heap {
    /// Live heap bytes now.
    pub fn now() -> Heap {
        Heap {
            requested: REQUESTED.load(Relaxed),
            chunks: CHUNKS.load(Relaxed),
        }
    }

    fn minus(self, earlier: Heap) -> Heap {
        Heap {
            requested: self.requested - earlier.requested,
            chunks: self.chunks - earlier.chunks,
        }
    }
}

/// Heap bytes per held lock, as asked for and in malloc chunks.
#[derive(Clone, Copy, Debug)]
pub struct PerLock {
    /// Requested bytes per lock.
    pub requested: f64,
    /// Estimated malloc chunk bytes per lock (what RSS grows by).
    pub chunks: f64,
}

/// What [`measure`] found.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// Locks held.
    pub locks: u64,
    /// Per held lock in the state built by `apply`.
    pub applied: PerLock,
    /// Per held lock in the same state restored from its postcard snapshot.
    pub restored: PerLock,
}

fn per_lock(with_locks: Heap, sessions_only: Heap, locks: u64) -> PerLock {
    let locks = locks as f64;
    PerLock {
        requested: (with_locks.requested as f64 - sessions_only.requested as f64) / locks,
        chunks: (with_locks.chunks as f64 - sessions_only.chunks as f64) / locks,
    }
}

/// The benchmark's held-locks workload (crates/bench, `held_locks`): `sessions` sessions
/// take `locks` exclusive locks named `held/{client}/{n}` in turn, with empty values,
/// each request acknowledging the one before. Measures the heap the state grows by per
/// held lock, after `apply` and after a postcard snapshot round trip.
///
/// # Panics
///
/// If an acquire is not granted (more than 10,000 locks per session, the default limit).
pub fn measure(sessions: u64, locks: u64) -> Report {
    start_counting();
    let mut events = Vec::with_capacity(16);
    let empty = Heap::now();
    let mut state = State::default();
    for client in 0..sessions {
        let opened = state.apply(
            Command::OpenSession {
                client_id: ClientId(u128::from(client) + 1),
                ttl_ms: 10_000,
            },
            &mut events,
        );
        assert!(matches!(opened, Ok(Response::SessionOpened { .. })));
        events.clear();
    }
    let sessions_only = Heap::now().minus(empty);
    for n in 0..locks {
        let client = n % sessions;
        let seq = n / sessions + 1;
        let granted = state.apply(
            Command::Acquire {
                session: SessionId(client + 1),
                request: RequestId {
                    seq,
                    first_unanswered_seq: seq,
                },
                name: format!("held/{client}/{n}"),
                mode: LockMode::Exclusive,
                wait: WaitPolicy::Queue,
                value: Vec::new(),
            },
            &mut events,
        );
        assert!(
            matches!(granted, Ok(Response::Granted { .. })),
            "lock {n}: {granted:?}"
        );
        events.clear();
    }
    let applied = Heap::now().minus(empty);
    assert_eq!(state.stats().held_grants, locks);

    let bytes = postcard::to_stdvec(&state).expect("encode");
    drop(state);
    let before_restore = Heap::now();
    let restored: State = postcard::from_bytes(&bytes).expect("decode");
    let restored_heap = Heap::now().minus(before_restore);
    restored.check_invariants().expect("restored state");
    assert_eq!(restored.stats().held_grants, locks);
    drop(restored);
    drop(events);

    Report {
        locks,
        applied: per_lock(applied, sessions_only, locks),
        restored: per_lock(restored_heap, sessions_only, locks),
    }
}
