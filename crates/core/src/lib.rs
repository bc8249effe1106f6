//! The fencelock state machine: sessions, locks, wait queues and fencing tokens.
//!
//! This crate is pure: `apply(command) -> (new state, result, events)` with no I/O, no
//! clock and no randomness, so every replica that applies the same log reaches the same
//! state, and the whole of it can be tested with property tests. Time reaches it only as
//! data inside commands (the leader decides that sessions expired and says so with
//! [`Command::ExpireSessions`]).

mod types;

pub use types::*;
