//! The fencelock server: replicates the `fencelock-core` state machine with openraft,
//! stores the Raft log and snapshots durably, serves the gRPC API and the admin HTTP
//! port, and runs the leader's lease clock.

pub mod raft;
pub mod store;
