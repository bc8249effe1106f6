//! fencelock's wire API, generated from `proto/fencelock.proto` (the client API) and
//! `proto/peer.proto` (node-to-node gRPC: `NodeInfo`; Raft's own messages go over the
//! server's links). Only this crate knows protobuf.
#![allow(missing_docs)] // generated code

/// The client-facing API: sessions, locks, watches and cluster administration.
pub mod v1 {
    tonic::include_proto!("fencelock.v1");
}

/// The node-to-node API that carries Raft messages.
pub mod peer {
    tonic::include_proto!("fencelock.peer");
}
