//! One keepalive outside a stream, for the JSON API's unary renew: served by the same
//! code as a keepalive of a gRPC stream (`keepalive.rs`), so it is answered only after a
//! quorum round that started after it arrived.

use super::LocksService;
use super::keepalive::{Confirmed, answer_keepalive, serve_keepalives};
use super::st;
use fencelock_core::SessionId;
use fencelock_proto::v1 as pb;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::{Request, Status};

impl LocksService {
    /// Renew one session as a keepalive of a stream of one would; the reply's `status`
    /// says whether the lease was renewed.
    ///
    /// # Errors
    /// The caller's authentication or its right on the session; `UNAVAILABLE` when the
    /// node stopped before the answer.
    pub(crate) async fn keep_alive_once(
        &self,
        request: Request<pb::KeepAliveRequest>,
    ) -> Result<pb::KeepAliveResponse, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let inbound = futures::stream::iter([Ok(request.into_inner())]);
        let (replies, mut answers) = mpsc::channel(1);
        let answer = |session: SessionId, arrived: Instant, confirmed: &Confirmed| {
            self.auth.require_session(&caller, session, None)?;
            Ok(answer_keepalive(&self.node, confirmed, session, arrived))
        };
        serve_keepalives(
            inbound,
            self.node.barrier(),
            &replies,
            self.node.stopping(),
            answer,
        )
        .await;
        drop(replies);
        answers.recv().await.unwrap_or_else(|| {
            Err(st::reason(
                tonic::Code::Unavailable,
                pb::ErrorReason::Unavailable,
                "node is shutting down; the lease was not renewed",
            ))
        })
    }
}
