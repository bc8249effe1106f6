//! `Client::save_snapshot`: a backup of the cluster's state, taken by the leader.

use crate::client::Client;
use crate::error::Result;
use crate::transport::CallSpec;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_client::ClusterClient;
use std::time::Duration;

impl Client {
    /// Admin: the bytes of a backup file of the cluster's applied state, taken by the
    /// leader after a read barrier (every write acknowledged before the call is in it).
    /// Needs `admin` on every lock. One attempt may take up to `attempt_timeout`; a
    /// broken transfer is taken again from the start.
    ///
    /// # Errors
    ///
    /// A refusal (permission), or a transient error once retries ran out.
    pub async fn save_snapshot(&self, attempt_timeout: Duration) -> Result<Vec<u8>> {
        let spec = CallSpec {
            timeout: Some(attempt_timeout),
            ..CallSpec::read(self.config())
        };
        self.transport()
            .call(spec, |channel, _| async move {
                let mut chunks = ClusterClient::new(channel)
                    .save_snapshot(pb::SaveSnapshotRequest {})
                    .await?
                    .into_inner();
                let mut bytes = Vec::new();
                while let Some(chunk) = chunks.message().await? {
                    bytes.extend_from_slice(&chunk.data);
                }
                Ok(tonic::Response::new(bytes))
            })
            .await
    }
}
