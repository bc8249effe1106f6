//! The client-facing gRPC services: [`LocksService`] (sessions, locks, watches) and
//! [`ClusterService`] (status, membership, backups). Both are thin: they validate, propose
//! through the proposer or read behind the read barrier, and map errors in `status`.

mod auth;
pub mod backup;
mod cluster;
pub mod http;
mod leader;
mod locks;
mod read;
pub mod status;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use locks::LocksService;
