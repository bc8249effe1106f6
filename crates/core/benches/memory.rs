//! Heap bytes per held lock in the state machine, for the benchmark's held-locks
//! workload (100,000 locks held by 128 sessions, names `held/{client}/{n}`). Run with
//! `cargo bench -p fencelock-core --bench memory`.
//!
//! "requested" sums the sizes asked of the allocator; "chunks" estimates glibc's malloc
//! chunks (header and rounding included), what RSS grows by.
//!
//! Measured (x86-64, Rust 1.95), applied / restored from a snapshot, bytes per lock:
//!
//! | layout | requested | malloc chunks |
//! |---|---|---|
//! | `BTreeMap` of holders per lock, names copied into each session | 779 / 786 | 829 / 845 |
//! | one holder inline, no queue buffer, names shared (`Arc<str>`) | 191 / 182 | 211 / 201 |
//! | the same, each grant with its grant time, weight, hold count and lock-delay, each lock with its semaphore limit | 232 / 226 | 251 / 244 |

#[path = "../tests/heap/mod.rs"]
mod heap;

#[global_allocator]
static ALLOC: heap::Allocator = heap::Allocator::system();

fn main() {
    let report = heap::measure(128, 100_000);
    println!("held locks: {}", report.locks);
    for (what, per_lock) in [
        ("applied", report.applied),
        ("restored from snapshot", report.restored),
    ] {
        println!(
            "{what:>24}: {:6.1} bytes/lock requested, {:6.1} bytes/lock in malloc chunks",
            per_lock.requested, per_lock.chunks
        );
    }
}
