//! The fencelock state machine: sessions, locks, wait queues and fencing tokens.
//!
//! This crate is pure: `apply(command) -> (new state, result, events)` with no I/O, no
//! clock and no randomness, so every replica that applies the same log reaches the same
//! state, and the whole of it can be tested with property tests. Time reaches it only as
//! data inside commands (the leader decides that sessions expired and says so with
//! [`Command::ExpireSessions`]).
//!
//! # A tour
//!
//! ```
//! use fencelock_core::{
//!     ClientId, Command, Event, LockMode, RequestId, Response, SessionId, State, WaitPolicy,
//! };
//!
//! let mut state = State::default();
//! let mut events = Vec::new();
//!
//! // A session is a lease, opened with an id the client chose.
//! let opened = state.apply(Command::OpenSession { client_id: ClientId(7), ttl_ms: 10_000 }, &mut events);
//! assert_eq!(opened, Ok(Response::SessionOpened { session: SessionId(1), ttl_ms: 10_000 }));
//!
//! // Every grant carries a fresh fencing token.
//! let acquire = |seq| Command::Acquire {
//!     session: SessionId(1),
//!     request: RequestId { seq, first_unanswered_seq: seq },
//!     name: "jobs/billing".to_owned(),
//!     mode: LockMode::Exclusive,
//!     wait: WaitPolicy::Queue,
//!     value: b"10.0.0.7:9000".to_vec(),
//! };
//! let granted = state.apply(acquire(1), &mut events).unwrap();
//! let Response::Granted { token, .. } = granted else { panic!("free lock") };
//! assert!(state.is_current_grant("jobs/billing", token));
//! assert!(matches!(events.last(), Some(Event::Acquired { .. })));
//!
//! // A retried request (same sequence number) acts once and gets the first answer.
//! assert_eq!(state.apply(acquire(1), &mut events), Ok(granted));
//!
//! // Time is data: the leader decides the lease ran out. Its locks are released.
//! state.apply(Command::ExpireSessions { sessions: vec![SessionId(1)] }, &mut events).unwrap();
//! assert!(state.lock("jobs/billing").is_none());
//! state.check_invariants().unwrap();
//! ```
//!
//! # Modules
//!
//! The vocabulary ([`Command`], [`Response`], [`Event`], [`Error`], [`Limits`] and the
//! ids) is plain data. [`State`] is the replicated state; [`State::apply`] changes it;
//! [`State::check_invariants`] checks it; the read accessors return owned views
//! ([`SessionView`], [`LockView`], [`Stats`]).

#![deny(missing_docs)]

mod apply;
pub mod auth;
mod compact;
mod grant_index;
mod invariants;
#[cfg(feature = "model-mutants")]
pub mod mutants;
mod restore;
mod state;
mod types;
mod validate;
pub mod version;
mod view;

pub use auth::{
    Access, AuthCommand, AuthError, AuthView, Caller, Credential, Permission, ROOT_USER, Right,
    Rights, password_fingerprint,
};
pub use grant_index::GrantAge;
pub use restore::{RestoreError, RestoredSessions};
pub use state::{State, StateV1, StateV2, StateV3, StateV3Ref};
pub use types::*;
pub use view::{HolderView, LockSummary, LockView, SessionView, Stats, WaiterView};
