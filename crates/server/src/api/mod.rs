//! The client-facing gRPC services: [`LocksService`] (sessions, locks, watches) and
//! [`ClusterService`] (status, membership). Both are thin: they validate, propose
//! through the proposer or read behind the read barrier, and map errors in `status`.

mod auth;
mod cluster;
pub mod http;
mod leader;
mod locks;
pub mod status;

pub use auth::AuthService;
pub use cluster::ClusterService;
pub use locks::LocksService;
