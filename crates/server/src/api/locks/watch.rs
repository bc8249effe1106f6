//! The `Watch` stream: lock events as this node applies them.

use super::convert::watch_event;
use super::{BoxStream, LocksService, StreamSlot};
use fencelock_core::Right;
use fencelock_proto::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

impl LocksService {
    pub(super) async fn serve_watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<BoxStream<pb::WatchEvent>>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let request = request.into_inner();
        if !request.prefix {
            self.check_name(&request.name)?;
        }
        self.auth.require(&caller, &request.name, Right::Read)?;
        let slot = StreamSlot::take(
            &self.watch_streams,
            self.node.config().max_watchers,
            "watch",
        )?;
        // Subscribe before reading the revision, so nothing between the two is missed.
        let mut events = self.node.hub().subscribe();
        // Again after subscribing: an auth change applied in between sends no event this
        // stream will see.
        self.auth.require(&caller, &request.name, Right::Read)?;
        let revision = self
            .node
            .shared()
            .read(|applied| applied.last_applied.map(|l| l.index).unwrap_or(0));
        let (sender, outbound) = mpsc::channel(self.node.config().watch_buffer.max(1));
        let node = self.node.clone();
        let auth = self.auth.clone();
        // The caller is checked again, on the applied state, whenever an auth command
        // takes effect: a revoked token, a removed user, a right taken away or auth
        // switched on under a stream opened while it was off ends the stream.
        let watched = request.name.clone();
        let still_allowed =
            move || -> Result<(), Status> { Ok(auth.require(&caller, &watched, Right::Read)?) };
        tokio::spawn(async move {
            let _slot = slot;
            let resync = |revision| pb::WatchEvent {
                revision,
                resync: true,
                ..Default::default()
            };
            if sender.send(Ok(resync(revision))).await.is_err() {
                return;
            }
            let mut last_revision = revision;
            loop {
                let applied = tokio::select! {
                    applied = events.recv() => applied,
                    _ = sender.closed() => return,
                    _ = node.stopping() => return,
                };
                match applied {
                    Ok(applied) if applied.resync => {
                        if let Err(denied) = still_allowed() {
                            let _ = sender.send(Err(denied)).await;
                            return;
                        }
                        last_revision = applied.index;
                        if sender.send(Ok(resync(last_revision))).await.is_err() {
                            return;
                        }
                    }
                    Ok(applied) => {
                        last_revision = applied.index;
                        for event in &applied.events {
                            if matches!(event, fencelock_core::Event::AuthChanged { .. })
                                && let Err(denied) = still_allowed()
                            {
                                let _ = sender.send(Err(denied)).await;
                                return;
                            }
                            if let Some(event) = watch_event(event, applied.index, &request)
                                && sender.send(Ok(event)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events may have changed auth.
                        if let Err(denied) = still_allowed() {
                            let _ = sender.send(Err(denied)).await;
                            return;
                        }
                        if sender.send(Ok(resync(last_revision))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            outbound,
        ))))
    }
}
