//! `Cluster.SaveSnapshot`: a backup of the applied state, for `fencelock snapshot save`.
//!
//! The leader confirms its leadership with a read barrier (which also waits until
//! everything committed before it is applied), then encodes its applied state under the
//! state's read lock, as the snapshot builder does: the backup is the state at a known
//! applied index, and includes every write acknowledged before the call.

use super::read::checked_barrier;
use super::status;
use crate::auth::Authenticator;
use crate::node::Node;
use crate::store::backup::{self, BackupHeader};
use crate::store::restore::read_cluster_id;
use crate::store::snapshot::SnapshotMeta;
use fencelock_proto::v1::{ErrorReason, SnapshotChunk};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Code, Status};

/// The size of each streamed piece of a backup.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The stream of a backup's pieces.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

/// Take a backup on `node` for the caller of `metadata`, who must be a superuser.
///
/// # Errors
/// UNAUTHENTICATED or PERMISSION_DENIED; NOT_LEADER (naming the leader) on a follower;
/// INTERNAL if the state cannot be encoded.
pub async fn save_snapshot(
    node: &Arc<Node>,
    auth: &Authenticator,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<ChunkStream, Status> {
    let caller = auth.authenticate(metadata).await?;
    checked_barrier(node, || auth.require_superuser(&caller)).await?;
    let internal = |message: String| status::reason(Code::Internal, ErrorReason::Internal, message);
    let cluster_id = read_cluster_id(&node.config().data_dir)
        .map_err(|e| internal(format!("cannot read the cluster id: {e}")))?
        .unwrap_or_default();
    let taken_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (shared, node_id) = (node.shared().clone(), node.id());
    let encoded = tokio::task::spawn_blocking(move || {
        shared.read(|applied| {
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
                snapshot_id: format!("backup-{taken_at_unix_ms}"),
            };
            let header = BackupHeader::describe(
                &cluster_id,
                node_id,
                &meta,
                &applied.state,
                taken_at_unix_ms,
            );
            backup::encode(&header, &meta, &applied.state).map(|bytes| (header, bytes))
        })
    })
    .await
    .map_err(|e| internal(format!("the backup task failed: {e}")))?;
    let (header, bytes) = encoded.map_err(|e| internal(e.to_string()))?;
    tracing::info!(
        index = header.index,
        last_token = header.last_token,
        bytes = bytes.len(),
        "backup taken"
    );
    let chunks: Vec<Result<SnapshotChunk, Status>> = bytes
        .chunks(CHUNK_BYTES)
        .map(|data| {
            Ok(SnapshotChunk {
                data: data.to_vec(),
            })
        })
        .collect();
    Ok(Box::pin(tokio_stream::iter(chunks)))
}
