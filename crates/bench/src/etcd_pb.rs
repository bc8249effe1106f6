//! The etcd v3 gRPC API subset, generated at build time from `proto/*.proto`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `etcdserverpb`: KV, Lease, Maintenance.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `v3lockpb`: the Lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}
