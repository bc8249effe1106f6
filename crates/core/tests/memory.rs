//! An upper bound on the heap the state machine uses per held lock, the benchmark's
//! held-locks workload at a size that debug builds (which check every invariant after
//! every command) run quickly. `benches/memory.rs` measures the full size.

mod heap;

#[global_allocator]
static ALLOC: heap::Allocator = heap::Allocator::system();

/// The target: at most 330 bytes of RSS per held lock per node (malloc chunks). It was
/// 300 before the grant index by time (`src/grant_index.rs`): one B-tree entry of 24
/// bytes per grant, about 45 bytes with the tree's nodes half full as grants arrive in
/// token order, the price of an exact oldest grant without a scan of the locks.
const MAX_BYTES_PER_LOCK: f64 = 330.0;

#[test]
fn bytes_per_held_lock_are_bounded() {
    let report = heap::measure(8, 1_600);
    println!("{report:#?}");
    assert_eq!(report.locks, 1_600);
    for (what, per_lock) in [("applied", report.applied), ("restored", report.restored)] {
        assert!(
            per_lock.chunks <= MAX_BYTES_PER_LOCK,
            "{what}: {:.0} bytes per held lock (malloc chunks; {:.0} requested), over {MAX_BYTES_PER_LOCK}",
            per_lock.chunks,
            per_lock.requested
        );
    }
}
