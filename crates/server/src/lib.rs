//! The fencelock server: replicates the `fencelock-core` state machine with openraft,
//! stores the Raft log and snapshots durably, serves the gRPC API and the admin HTTP
//! port, and runs the leader's lease clock.

pub mod admin;
pub mod api;
pub mod auth;
pub mod barrier;
pub mod certs;
pub mod commit_trace;
pub mod config;
mod duties;
pub mod events;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod proposer;
pub mod raft;
pub mod space;
pub mod startup;
pub mod status;
pub mod store;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
