//! Resource-side fencing for fencelock: the check that makes a lock safe.
//!
//! # The paused-client problem
//!
//! A lock held through a lease can be lost without its holder noticing: the holder
//! pauses (a GC pause, a swapped-out process, a stalled VM, a slow network), its lease
//! expires, the lock service grants the lock to someone else, and then the first holder
//! wakes up and writes, believing it still holds the lock. Two writers now interleave.
//! No check the holder makes can close this gap, because the pause can fall between the
//! check and the write.
//!
//! fencelock therefore gives every grant a **fencing token**, a number that strictly
//! increases with each grant of a lock. The holder sends its token with every write, and
//! the *resource* refuses a write whose token is lower than one it has already accepted.
//! The stale holder's write arrives with the old token and is refused, whenever it
//! arrives. This crate is that check.
//!
//! # Why `Verify` on the lock service is not enough
//!
//! fencelock's `Verify(name, token)` answers, linearizably, "is this token the current
//! grant?". It is advisory: the answer is true at the moment the service answers, and the
//! holder can pause between receiving "yes" and its write reaching the resource. Only a
//! check made by the resource itself, atomically with the write, cannot be overtaken.
//! That is [`Fence::admit`]: it compares the token, runs the write and records the token
//! in one atomic step (one mutex hold, or one database transaction).
//!
//! # Resources, locks and tokens
//!
//! The fence is keyed by **resource**. Each resource is protected by one lock: the first
//! admitted token binds the resource to the lock it was presented under (or bind it up
//! front with [`Fence::bind`]), and a token presented under another lock is refused with
//! [`FenceError::WrongLock`]. fencelock mints tokens from one cluster-wide counter, so
//! tokens are unique and increasing across the whole cluster, but what the service
//! *guarantees* to a resource is the order of the grants of one lock; comparing tokens of
//! two locks would let a holder of one lock fence out the other's holder, which is a
//! configuration mistake to report, not a decision to make silently.
//!
//! A token **equal** to the highest seen is admitted: it is the same holder writing
//! again. A lower token is refused with [`FenceError::Refused`], which carries the highest
//! token seen; the holder must stop, as its lock has been granted to someone else.
//!
//! # Backends
//!
//! - [`MemoryFence`]: an ordered map behind a mutex.
//! - [`DurableFence`]: a redb database file. The token and the operation's writes commit
//!   in one write transaction with immediate durability, and survive restarts.
//!
//! Both implement [`Fence`]. [`Fence::admit`] gives the operation a [`ResourceTable`], a
//! key-value table kept in the fence itself, whose writes take effect together with the
//! token, or, if the operation returns `Err`, not at all (nor does the token).
//! [`DurableFence::admit_in_transaction`] gives it the whole redb transaction instead.
//!
//! Every call that reaches the token comparison yields a [`Decision`]: from the
//! [`Admitted`] value (`Admitted { token, previous }`) or from the error
//! (`Refused { token, highest_seen }`), for logs, metrics and checkers.
//!
//! # Example
//!
//! A holder pauses, its lease expires, a second holder gets token 8 and writes; the first
//! holder wakes up and its write with token 7 is refused.
//!
//! ```
//! use fencelock_fence::{DurableFence, Fence, FenceError, FencingToken, ResourceTable};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let directory = tempfile::tempdir()?;
//! let fence = DurableFence::open(directory.path().join("fence.redb"))?;
//!
//! // The write of a holder: store the new balance of an account.
//! let write = |balance: &'static [u8]| {
//!     move |table: &mut dyn ResourceTable| table.insert(b"account/42", balance)
//! };
//!
//! // The first holder, token 7, writes twice.
//! fence.admit("account/42", "locks/account-42", FencingToken(7), write(b"100"))?;
//! let again = fence.admit("account/42", "locks/account-42", FencingToken(7), write(b"90"))?;
//! assert_eq!(again.previous, Some(FencingToken(7)));
//!
//! // It pauses; the lock is granted to the second holder, token 8, which writes.
//! fence.admit("account/42", "locks/account-42", FencingToken(8), write(b"500"))?;
//!
//! // The first holder wakes up and writes with its old token: refused, nothing written.
//! let stale = fence.admit("account/42", "locks/account-42", FencingToken(7), write(b"80"));
//! assert!(matches!(
//!     stale,
//!     Err(FenceError::Refused { highest_seen: FencingToken(8), .. })
//! ));
//! assert_eq!(fence.get(b"account/42")?, Some(b"500".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! `examples/fenced_service.rs` plays the same story against a ledger file, printing every
//! decision (`cargo run -p fencelock-fence --example fenced_service`).
//!
//! # From async code
//!
//! The API is synchronous: [`DurableFence`] waits for an fsync, and both backends run the
//! operation while holding the fence. From an async service, call it on a blocking thread
//! with the fence in an `Arc`:
//!
//! ```
//! use std::sync::Arc;
//! use fencelock_fence::{Fence, FencingToken, MemoryFence};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fence = Arc::new(MemoryFence::new());
//! let admitted = tokio::task::spawn_blocking({
//!     let fence = Arc::clone(&fence);
//!     move || fence.admit("jobs/report", "locks/report", FencingToken(3), |table| {
//!         table.insert(b"jobs/report/state", b"done")
//!     })
//! })
//! .await??;
//! assert_eq!(admitted.token, FencingToken(3));
//! # Ok(())
//! # }
//! ```
//!
//! # The same check in SQL
//!
//! A resource that is a SQL table needs no library: keep a `fence_token` column beside
//! the data and make the check and the write one statement, so the database does both
//! atomically. The same statement works in PostgreSQL, MySQL and SQLite (write the
//! placeholders as `$1` in PostgreSQL, `?` in MySQL and SQLite):
//!
//! ```sql
//! UPDATE t SET v = $v, fence_token = $t WHERE id = $id AND fence_token <= $t;
//! ```
//!
//! Then **check the affected row count**: 1 means admitted; 0 means refused (a higher
//! token was seen) or no such row. Ignoring the count silently drops the refusal. (In
//! MySQL, the affected count of a row updated with identical values is 0 unless the
//! connection sets `CLIENT_FOUND_ROWS`; set it, or the same holder's repeated identical
//! write looks refused.)
//!
//! To create the row on the first write, PostgreSQL and SQLite (3.24 or later) take an
//! upsert whose update is guarded by the same condition:
//!
//! ```sql
//! INSERT INTO t (id, v, fence_token) VALUES ($id, $v, $t)
//! ON CONFLICT (id) DO UPDATE SET v = excluded.v, fence_token = excluded.fence_token
//! WHERE t.fence_token <= excluded.fence_token;
//! ```
//!
//! Again, 0 affected rows means refused. To keep one fence for many rows (the resource
//! is the table, not the row), keep the token in a separate one-row-per-resource table
//! and update it with the guarded `UPDATE` in the same transaction as the data, first, so
//! that its row lock serialises the writers; roll back when it affects no row.

mod durable;
mod error;
mod fence;
mod memory;
mod table;
mod token;

pub use durable::DurableFence;
pub use error::{FenceError, StorageError};
pub use fence::Fence;
pub use memory::MemoryFence;
/// The redb crate, at the version [`DurableFence::database`] and
/// [`DurableFence::admit_in_transaction`] expose.
pub use redb;
pub use table::ResourceTable;
pub use token::{Admitted, Decision, FenceRecord, FencingToken};
