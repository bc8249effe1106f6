//! The async Rust client of **fencelock**, a distributed lock service with fencing
//! tokens.
//!
//! # Tutorial
//!
//! Connect to any node of the cluster (the client finds the leader and follows it), open
//! a [`Session`] (a lease the client keeps alive in the background), and take a lock.
//! The [`LockGuard`] carries the grant's [`FencingToken`]: send it with every write to
//! the protected resource, which refuses tokens older than the newest it has seen. Stop
//! when [`LockGuard::lost`] fires.
//!
//! ```
//! use fencelock_client::{Client, Result};
//! use std::time::Duration;
//!
//! # async fn write_with_token(_token: u64) {}
//! #[tokio::main(flavor = "multi_thread")]
//! async fn main() -> Result<()> {
//! #   // The doc test runs against an in-process cluster.
//! #   let cluster = fencelock_server::testing::TestCluster::start(1).await;
//! #   let endpoints = cluster.endpoints();
//!     // e.g. ["10.0.0.1:7070", "10.0.0.2:7070", "10.0.0.3:7070"]: any node will do.
//!     let client = Client::connect(endpoints).await?;
//!     let session = client.session(Duration::from_secs(10)).await?;
//!
//!     // Wait for the lock as long as it takes (cancel safe: drop the future to give up).
//!     let guard = session.lock("jobs/billing").await?;
//!     println!("holding {} with token {}", guard.name(), guard.token());
//!
//!     tokio::select! {
//!         // The work, fenced by the token at the resource.
//!         _ = write_with_token(guard.token().0) => {}
//!         // The lease ran out on our clock (before the server's): stop at once.
//!         reason = guard.lost() => eprintln!("lost the lock: {reason}"),
//!     }
//!     guard.release().await?;
//!
//!     // Try without waiting, or wait a bounded time.
//!     let other = client.session(Duration::from_secs(10)).await?;
//!     let held = other.try_lock("jobs/billing").await?.expect("free");
//!     assert!(session.try_lock("jobs/billing").await?.is_none());
//!     match session.lock_timeout("jobs/billing", Duration::from_millis(200)).await? {
//!         Some(guard) => guard.release().await?,
//!         None => println!("still taken after 200 ms; no waiter was left behind"),
//!     }
//!     drop(held); // releases in the background
//!
//!     // Who holds what.
//!     let description = client.describe("jobs/billing").await?;
//!     println!("{:?} at revision {}", description.lock, description.revision);
//!
//!     other.close().await?;
//!     session.close().await
//! }
//! ```
//!
//! Shared (reader) locks, holder values and explicit wait policies go through
//! [`Session::acquire`] with [`AcquireOptions`]. [`Client::watch`] streams changes,
//! [`Client::describe`] / [`Client::list`] read the state, and the [`election`] module
//! builds leader election on top. For a lock without a session (the CLI's
//! `fencelock acquire NAME --ttl 30s`) use [`Client::acquire_with_lease`].
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], one enum with a variant per reason the server
//! gives (the gRPC status detail's `ErrorReason`) plus the client's own
//! ([`Error::SessionLost`], [`Error::Timeout`], [`Error::Config`]). Redirects to the
//! leader, "no leader" during elections and unreachable nodes are retried (the next node
//! at once, a pause of randomized exponential backoff after each round over the nodes
//! that failed) until the retry deadline ([`ClientBuilder`]); only then
//! do [`Error::NotLeader`], [`Error::NoLeader`] or [`Error::Unavailable`] reach the
//! caller. [`Error::Unavailable::outcome_unknown`](Error::Unavailable) says whether a
//! mutation may have acted.
//!
//! # Exactly once
//!
//! Every mutation of a session carries a request id (`seq`, counting from 1, and
//! `first_unanswered_seq`, the lowest seq whose answer has not arrived). Retries resend
//! the *same* id, and the cluster's state machine remembers each answer until the client
//! acknowledges it, so a retry after a lost answer or a leader change returns the first
//! answer instead of acting twice. A retried wait re-attaches to the wait it queued.
//!
//! # Cancel safety
//!
//! Acquiring ([`Session::acquire`], [`Session::lock`], [`Session::lock_timeout`],
//! [`Session::try_lock`], [`election::Election::campaign`]) is cancel safe: dropping the
//! future withdraws the request on the server and releases a grant that raced the drop,
//! in the background. [`LockGuard::release`] is cancel safe too (the release is re-sent
//! in the background). Dropping a [`LockGuard`] releases it and dropping the last handle
//! of a [`Session`] closes it, both in the background; `Drop` never blocks.
//!
//! # Connections
//!
//! A [`Client`] keeps one lazily connected HTTP/2 channel per node address, shared by
//! all its calls, and one `KeepAlive` stream to the leader carrying every session's
//! keepalives; clone the client rather than connecting again.
#![deny(missing_docs)]

mod acquire;
mod auth;
mod backup;
mod client;
mod clock;
mod config;
pub mod election;
mod error;
mod keepalive;
mod lock;
mod session;
mod transport;
mod types;
mod watch;
mod wire;

pub use auth::{AuthStatus, Rights};
pub use client::Client;
#[cfg(feature = "test-support")]
pub use clock::{LeaseClock, LeaseInstant, ManualClock};
pub use config::ClientBuilder;
pub use error::{Error, Result};
pub use keepalive::Lost;
pub use lock::{Acquisition, LockGuard, MultiAcquisition};
pub use session::{Session, SessionOptions};
pub use types::{
    AcquireOptions, ClusterStatus, Description, FencingToken, Holder, LeaseLock, ListPage,
    LockDelay, LockInfo, LockMode, LostReason, Member, SessionId, Verification, Wait, Waiter,
};
pub use types::{SessionInfo, SessionPage};
pub use watch::{WatchEvent, WatchPosition, WatchStream};
