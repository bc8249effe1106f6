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

use crate::auth::Authenticator;
use crate::node::Node;
use std::sync::Arc;

/// The authenticator of `node`'s client services: an unknown bearer token or user is
/// looked up again once the node has caught up with the leader ([`Node::catch_up`]).
fn authenticator(node: &Arc<Node>) -> Authenticator {
    Authenticator::new(node.shared().clone()).with_catch_up(node.clone())
}
pub use cluster::ClusterService;
pub use locks::LocksService;
