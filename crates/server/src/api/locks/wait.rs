//! The wait of a queued `Acquire`: until the grant, the deadline (then a cancel through
//! the log), the node stopping or losing leadership; withdrawn if the call goes away.

use super::LocksService;
use super::{from_core, propose_error, st};
use crate::events::{Attach, WaitOutcome, WaitTicket};
use crate::node::Node;
use fencelock_core::{Command, FencingToken, Response, SessionId};
use fencelock_proto::v1 as pb;
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

impl LocksService {
    /// Wait for a queued acquire to end, cancelling it through the log at the deadline.
    pub(super) async fn wait_for_grant(
        &self,
        session: SessionId,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<WaitEnd, Status> {
        let ticket = match self
            .node
            .hub()
            .attach_wait(self.node.shared(), session, name)
        {
            Attach::Granted(token) => return Ok(WaitEnd::Granted(token)),
            Attach::NotWaiting => return self.settle_ended_wait(session, name),
            Attach::Waiting(ticket) => ticket,
        };
        let mut guard = WaitGuard {
            node: self.node.clone(),
            ticket,
            session,
            name: name.to_string(),
            armed: true,
        };
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = &mut guard.ticket.outcome => outcome.ok(),
            _ = expired => None,
            // A stopping node answers at once, so graceful shutdown does not wait for the
            // wait; it stays queued and the client re-attaches on the next leader.
            () = self.node.stopping() => {
                guard.disarm();
                return Err(st::reason(
                    tonic::Code::Unavailable,
                    pb::ErrorReason::Unavailable,
                    "node is shutting down; retry with the same request id",
                ));
            }
            // A deposed leader cannot learn of the grant or cancel the wait: send the
            // client to the new leader, where the same request id re-attaches to the wait.
            leader = self.node.leadership_lost() => {
                guard.disarm();
                return Err(
                    propose_error(&self.node, crate::proposer::ProposeError::NotLeader { leader }).await,
                );
            }
        };
        guard.disarm();
        match outcome {
            // Its wait time is recorded by every node from the log (`metrics::HoldTimes`).
            Some(WaitOutcome::Granted(token)) => Ok(WaitEnd::Granted(token)),
            Some(WaitOutcome::Ended) => self.settle_ended_wait(session, name),
            // The deadline passed: ask the state machine, which decides between the grant
            // and the cancel; the reply reports its decision, never a guess.
            None => self.cancel_wait(session, name).await,
        }
    }

    async fn cancel_wait(&self, session: SessionId, name: &str) -> Result<WaitEnd, Status> {
        let command = Command::CancelWait {
            session,
            name: name.to_string(),
        };
        match self.node.proposer().propose(command).await {
            Ok(Ok(Response::Granted { token, .. })) => Ok(WaitEnd::Granted(token)),
            Ok(Ok(_)) => Ok(WaitEnd::TimedOut),
            Ok(Err(fencelock_core::Error::NotWaiting(_))) => self.settle_ended_wait(session, name),
            Ok(Err(error)) => Err(from_core(&error)),
            Err(error) => Err(propose_error(&self.node, error).await),
        }
    }

    /// The wait is over without a grant seen: read what the state says.
    fn settle_ended_wait(&self, session: SessionId, name: &str) -> Result<WaitEnd, Status> {
        self.node.shared().read(|applied| {
            if applied.state.session_ttl_ms(session).is_none() {
                return Err(from_core(&fencelock_core::Error::SessionNotFound(session)));
            }
            match applied.state.held_token(session, name) {
                Some(token) => Ok(WaitEnd::Granted(token)),
                None => Ok(WaitEnd::TimedOut),
            }
        })
    }
}
pub(super) enum WaitEnd {
    Granted(FencingToken),
    TimedOut,
}

/// Withdraws the wait on the server if the `Acquire` call is dropped (the client went
/// away or cancelled) while it was the last call attached to that wait.
struct WaitGuard {
    node: Arc<Node>,
    ticket: WaitTicket,
    session: SessionId,
    name: String,
    armed: bool,
}

impl WaitGuard {
    fn disarm(&mut self) {
        self.armed = false;
        self.ticket.detach(self.node.hub());
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.armed && self.ticket.detach(self.node.hub()) {
            let node = self.node.clone();
            let command = Command::CancelWait {
                session: self.session,
                name: std::mem::take(&mut self.name),
            };
            tokio::spawn(async move {
                let _ = node.proposer().propose(command).await;
            });
        }
    }
}
