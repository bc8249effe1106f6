//! An upper bound on the heap the state machine uses per held lock, the benchmark's
//! held-locks workload at a size that debug builds (which check every invariant after
//! every command) run quickly. `benches/memory.rs` measures the full size.

mod heap;

#[global_allocator]
static ALLOC: heap::Allocator = heap::Allocator::system();

/// The target: at most 300 bytes of RSS per held lock per node (malloc chunks).
const MAX_BYTES_PER_LOCK: f64 = 300.0;

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
