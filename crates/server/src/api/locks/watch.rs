//! The `Watch` stream: lock events as this node applies them, first replayed from the
//! node's watch history (`events.rs`) when the request names a start position.
//!
//! A stream keeps `next`, the first position it has not passed: it sends an event only
//! at or after `next` and moves `next` past every entry it handles. The replayed entries
//! and the live ones meet without a gap or an overlap (`EventHub::subscribe_from` takes
//! both under the state's read lock); `next` also holds back the live entries below a
//! start position that is ahead of this node, which it then simply waits for.
//!
//! A stream without a start position behaves as it always has: a `resync` message first
//! and whenever events were lost. A stream with one never skips: where it would have to
//! (the history no longer holds its next event), it ends with `COMPACTED`.

use super::convert::watch_event;
use super::st;
use super::{BoxStream, LocksService, StreamSlot};
use crate::events::{AppliedEvents, Compacted, EventPosition, Subscription};
use crate::node::Node;
use fencelock_core::{Event, Right};
use fencelock_proto::v1 as pb;
use std::sync::Arc;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
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
        let start = (request.start_revision != 0).then_some(EventPosition {
            revision: request.start_revision,
            event: request.start_event,
        });
        let slot = StreamSlot::take(
            &self.watch_streams,
            self.node.config().api_limits.max_watchers,
            "watch",
        )?;
        let subscription = self
            .node
            .hub()
            .subscribe_from(self.node.shared(), start)
            .map_err(|compacted| compacted_status(compacted, request.start_revision))?;
        // Again after subscribing: an auth change applied in between sends no event this
        // stream will see.
        self.auth.require(&caller, &request.name, Right::Read)?;
        let (sender, outbound) = mpsc::channel(self.node.config().api_limits.watch_buffer.max(1));
        // The caller is checked again, on the applied state, whenever an auth command
        // takes effect: a revoked token, a removed user, a right taken away or auth
        // switched on under a stream opened while it was off ends the stream.
        let auth = self.auth.clone();
        let watched = request.name.clone();
        let still_allowed = Box::new(move || -> Result<(), Status> {
            Ok(auth.require(&caller, &watched, Right::Read)?)
        });
        let mut stream = WatchTask {
            node: self.node.clone(),
            request,
            sender,
            still_allowed,
            resumable: start.is_some(),
            next: start.unwrap_or(EventPosition::at_revision(subscription.revision + 1)),
        };
        tokio::spawn(async move {
            let _slot = slot;
            // Ends when the watcher goes, the node stops, or the stream failed (the
            // error already sent).
            let _: Result<(), Stop> = stream.serve(subscription).await;
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            outbound,
        ))))
    }
}

fn compacted_status(compacted: Compacted, start_revision: u64) -> Status {
    st::compacted(
        compacted.oldest_revision,
        format!(
            "watch events from revision {start_revision} are no longer held on this node \
             (the oldest start revision it serves is {}): re-read and watch from there",
            compacted.oldest_revision
        ),
    )
}

fn resync(revision: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        revision,
        resync: true,
        ..Default::default()
    }
}

/// The stream ends (the watcher went, the node stops, or an error was sent).
struct Stop;

/// One watch stream's task.
struct WatchTask {
    node: Arc<Node>,
    request: pb::WatchRequest,
    sender: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    still_allowed: Box<dyn Fn() -> Result<(), Status> + Send + Sync>,
    /// The request named a start position: never skip, fail with COMPACTED instead.
    resumable: bool,
    /// The first position not yet passed.
    next: EventPosition,
}

impl WatchTask {
    async fn serve(&mut self, subscription: Subscription) -> Result<(), Stop> {
        if !self.resumable {
            self.send(resync(subscription.revision)).await?;
        }
        let mut live = self.replay(subscription).await?;
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = self.sender.closed() => return Err(Stop),
                () = self.node.stopping() => return Err(Stop),
            };
            match received {
                Ok(entry) if entry.resync => self.state_replaced(&entry).await?,
                Ok(entry) => self.deliver(&entry).await?,
                Err(RecvError::Lagged(_)) => live = self.catch_up().await?,
                Err(RecvError::Closed) => return Err(Stop),
            }
        }
    }

    /// Send the replayed entries; then the stream goes on with the live ones.
    async fn replay(
        &mut self,
        subscription: Subscription,
    ) -> Result<broadcast::Receiver<Arc<AppliedEvents>>, Stop> {
        for entry in &subscription.replay {
            self.deliver(entry).await?;
        }
        Ok(subscription.live)
    }

    /// Send the matching events of `entry` at or after `next`, and pass the entry.
    async fn deliver(&mut self, entry: &AppliedEvents) -> Result<(), Stop> {
        for (index, event) in entry.events.iter().enumerate() {
            if matches!(event, Event::AuthChanged { .. }) {
                self.check_allowed().await?;
            }
            let position = EventPosition {
                revision: entry.index,
                event: u32::try_from(index).unwrap_or(u32::MAX),
            };
            if position < self.next {
                continue;
            }
            if let Some(mut sent) = watch_event(event, entry.index, &self.request) {
                sent.event_index = position.event;
                // A delay names the session whose lost grant started it: that grant's
                // release comes just before it in the entry.
                if let Event::LockDelayStarted { token, .. } = event {
                    sent.session_id = crate::events::delay_session(&entry.events, index, *token)
                        .map_or(0, |s| s.0);
                }
                self.send(sent).await?;
            }
        }
        self.next = self.next.max(EventPosition::at_revision(entry.index + 1));
        Ok(())
    }

    /// A snapshot replaced the state at `entry.index`: the events before it that this
    /// stream has not passed are gone.
    async fn state_replaced(&mut self, entry: &AppliedEvents) -> Result<(), Stop> {
        self.check_allowed().await?;
        let after = EventPosition::at_revision(entry.index + 1);
        if self.resumable {
            if self.next < after {
                let oldest = Compacted {
                    oldest_revision: after.revision,
                };
                return self
                    .fail(compacted_status(oldest, self.next.revision))
                    .await;
            }
            return Ok(());
        }
        self.next = self.next.max(after);
        self.send(resync(entry.index)).await
    }

    /// The stream fell further behind than the live channel buffers: go on from the
    /// history. Past the history, a resumable stream fails with COMPACTED and any other
    /// is told to resync.
    async fn catch_up(&mut self) -> Result<broadcast::Receiver<Arc<AppliedEvents>>, Stop> {
        // The entries missed may have changed auth.
        self.check_allowed().await?;
        let hub = self.node.hub();
        match hub.subscribe_from(self.node.shared(), Some(self.next)) {
            Ok(subscription) => self.replay(subscription).await,
            Err(compacted) if self.resumable => {
                self.fail(compacted_status(compacted, self.next.revision))
                    .await
            }
            Err(_) => match hub.subscribe_from(self.node.shared(), None) {
                Ok(subscription) => {
                    self.next = EventPosition::at_revision(subscription.revision + 1);
                    self.send(resync(subscription.revision)).await?;
                    Ok(subscription.live)
                }
                Err(_) => Err(Stop),
            },
        }
    }

    async fn check_allowed(&self) -> Result<(), Stop> {
        match (self.still_allowed)() {
            Ok(()) => Ok(()),
            Err(denied) => self.fail(denied).await,
        }
    }

    async fn send(&self, event: pb::WatchEvent) -> Result<(), Stop> {
        self.sender.send(Ok(event)).await.map_err(|_| Stop)
    }

    /// End the stream with `status`.
    async fn fail<T>(&self, status: Status) -> Result<T, Stop> {
        let _ = self.sender.send(Err(status)).await;
        Err(Stop)
    }
}
