//! The thin adapter over openraft: the type configuration shared by the storage and
//! network modules. Everything openraft-specific stays behind `raft` and `store`, so a
//! later move to openraft 0.10 stays local.

use fencelock_core::{Command, Error as CoreError, Response};
use serde::{Deserialize, Serialize};

/// Raft node ids are `u64`.
pub type NodeId = u64;

/// What the membership config records about a node: where its Raft traffic goes.
/// (Its client address is asked for over the peer service; see `peer.proto`.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the node's peer (Raft) listener.
    pub peer_addr: String,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.peer_addr)
    }
}

/// One Raft entry's payload: commands packed by the proposer, applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandBatch(pub Vec<Command>);

/// The results of one entry's commands, in the same order. Only ever in memory (the
/// answer the applying node hands to the proposer), never stored, so it may change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult(pub Vec<AppliedCommand>);

/// One command's result, with facts read from the state right after it was applied.
///
/// The `Response` is what a retry with the same request id gets again (it is kept in
/// the state and its snapshots, so its shape is fixed); what travels beside it here is
/// not kept, and lets the caller answer without reading the state again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedCommand {
    /// The command's result.
    pub result: Result<Response, CoreError>,
    /// The TTL of the session the response names (`Granted`, `GrantedLocks`, `Queued`,
    /// `WouldBlock`, `SessionOpened`), if that session is open after the command.
    pub session_ttl_ms: Option<u64>,
}

impl std::fmt::Display for CommandBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} commands", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// fencelock's openraft type configuration.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResult,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A stored membership.
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;

pub mod link;
pub mod membership;
pub mod network;

/// The commit trace's tag ([`crate::commit_trace::append_tag`]) of an AppendEntries
/// request: here, so that the trace knows no Raft type.
pub(crate) fn append_tag_of(
    target: Option<u64>,
    request: &openraft::raft::AppendEntriesRequest<TypeConfig>,
) -> u64 {
    crate::commit_trace::append_tag(
        target,
        request.entries.last().map(|entry| entry.log_id.index),
        request.leader_commit.map(|committed| committed.index),
    )
}
