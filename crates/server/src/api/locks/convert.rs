//! Conversions between the protobuf messages and the core's types.

use super::invalid_argument;
use super::st;
use fencelock_core::{ClientId, LockMode, LockSpec, ReleaseReason, RequestId, Response, SessionId};
use fencelock_proto::v1 as pb;
use tonic::Status;

pub(super) fn client_id(bytes: &[u8]) -> Result<ClientId, Status> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| invalid_argument("client_id must be 16 bytes (a UUID)"))?;
    Ok(ClientId(u128::from_be_bytes(bytes)))
}

pub(super) fn request_id(request: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let request = request.ok_or_else(|| invalid_argument("request id is required"))?;
    if request.seq == 0 {
        return Err(invalid_argument("request seq starts at 1"));
    }
    Ok(RequestId {
        seq: request.seq,
        first_unanswered_seq: request.first_unanswered_seq,
    })
}

pub(super) fn session_id(id: u64) -> Result<SessionId, Status> {
    if id == 0 {
        return Err(invalid_argument("session_id is required"));
    }
    Ok(SessionId(id))
}

pub(super) fn mode_from(mode: i32) -> Result<LockMode, Status> {
    match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Exclusive) => Ok(LockMode::Exclusive),
        Ok(pb::LockMode::Shared) => Ok(LockMode::Shared),
        Err(_) => Err(invalid_argument(format!("unknown lock mode {mode}"))),
    }
}

pub(super) fn mode_to(mode: LockMode) -> i32 {
    match mode {
        LockMode::Exclusive => pb::LockMode::Exclusive as i32,
        LockMode::Shared => pb::LockMode::Shared as i32,
    }
}

/// A lock spec from its wire form: a semaphore is taken in shared mode (its holders
/// coexist up to the limit), and an unset weight counts as 1.
pub(super) fn lock_spec(
    name: String,
    mode: i32,
    permits: u32,
    weight: u32,
    reentrant: bool,
    lock_delay_ms: u64,
) -> Result<LockSpec, Status> {
    let permits = (permits != 0).then_some(permits);
    let mode = if permits.is_some() {
        LockMode::Shared
    } else {
        mode_from(mode)?
    };
    Ok(LockSpec {
        name,
        mode,
        permits,
        weight: weight.max(1),
        reentrant,
        lock_delay_ms,
    })
}

/// The time from `since_ms` to `now_ms` (both the leader's wall clock as the log
/// recorded it, or this node's own); 0 when `since_ms` is unknown (0).
pub(super) fn elapsed_ms(since_ms: u64, now_ms: u64) -> u64 {
    if since_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(since_ms)
    }
}

/// A lock's wire form; durations ("held for", "waited for", a delay's remainder) are
/// counted to `now_ms`, the answering node's wall clock.
pub(super) fn lock_info(view: fencelock_core::LockView, now_ms: u64) -> pb::LockInfo {
    pb::LockInfo {
        name: view.name,
        holders: view
            .holders
            .into_iter()
            .map(|h| pb::Holder {
                session_id: h.session.0,
                token: h.token.0,
                mode: mode_to(h.mode),
                value: h.value,
                client_id: h.client_id.0.to_be_bytes().to_vec(),
                hold_count: h.hold_count,
                weight: h.weight,
                granted_at_ms: h.granted_at_ms,
                held_for_ms: elapsed_ms(h.granted_at_ms, now_ms),
                lock_delay_ms: h.lock_delay_ms,
            })
            .collect(),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| pb::Waiter {
                session_id: w.session.0,
                mode: mode_to(w.mode),
                weight: w.weight,
                queued_at_ms: w.queued_at_ms,
                waited_for_ms: elapsed_ms(w.queued_at_ms, now_ms),
                names: w.names,
            })
            .collect(),
        permits: view.permits.unwrap_or(0),
        permits_used: u32::try_from(view.permits_used).unwrap_or(u32::MAX),
        lock_delay: view.delay.map(|delay| pb::LockDelay {
            delay_ms: delay.delay_ms,
            started_at_ms: delay.started_at_ms,
            remaining_ms: if delay.started_at_ms == 0 {
                delay.delay_ms
            } else {
                delay
                    .delay_ms
                    .saturating_sub(elapsed_ms(delay.started_at_ms, now_ms))
            },
            token: delay.token.0,
            ..Default::default()
        }),
    }
}

pub(super) fn watch_event(
    event: &fencelock_core::Event,
    revision: u64,
    request: &pb::WatchRequest,
) -> Option<pb::WatchEvent> {
    use fencelock_core::Event;
    let matches = |name: &str| {
        if request.prefix {
            name.starts_with(&request.name)
        } else {
            name == request.name
        }
    };
    match event {
        Event::Acquired {
            name,
            session,
            token,
            mode,
            value,
        } if matches(name) => Some(pb::WatchEvent {
            kind: pb::EventKind::Acquired as i32,
            name: name.clone(),
            session_id: session.0,
            token: token.0,
            mode: mode_to(*mode),
            value: value.clone(),
            revision,
            ..Default::default()
        }),
        Event::Released {
            name,
            session,
            token,
            reason,
        } if matches(name) => Some(pb::WatchEvent {
            kind: match reason {
                ReleaseReason::Released => pb::EventKind::Released,
                ReleaseReason::SessionClosed => pb::EventKind::SessionClosed,
                ReleaseReason::SessionExpired => pb::EventKind::Expired,
                ReleaseReason::Forced => pb::EventKind::Forced,
                ReleaseReason::Revoked => pb::EventKind::Revoked,
            } as i32,
            name: name.clone(),
            session_id: session.0,
            token: token.0,
            revision,
            ..Default::default()
        }),
        Event::LockDelayStarted {
            name,
            token,
            delay_ms,
        } if matches(name) => Some(pb::WatchEvent {
            kind: pb::EventKind::LockDelayStarted as i32,
            name: name.clone(),
            token: token.0,
            lock_delay_ms: *delay_ms,
            revision,
            ..Default::default()
        }),
        Event::LockDelayEnded { name, token } if matches(name) => Some(pb::WatchEvent {
            kind: pb::EventKind::LockDelayEnded as i32,
            name: name.clone(),
            token: token.0,
            revision,
            ..Default::default()
        }),
        Event::ValueChanged {
            name,
            session,
            token,
            value,
        } if matches(name) => Some(pb::WatchEvent {
            kind: pb::EventKind::ValueChanged as i32,
            name: name.clone(),
            session_id: session.0,
            token: token.0,
            value: value.clone(),
            revision,
            ..Default::default()
        }),
        _ => None,
    }
}

pub(super) fn session_info(view: fencelock_core::SessionView) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: view.session.0,
        client_id: view.client_id.0.to_be_bytes().to_vec(),
        ttl_ms: view.ttl_ms,
        held: view
            .held
            .into_iter()
            .map(|(name, token)| pb::HeldLock {
                name,
                token: token.0,
            })
            .collect(),
        waiting: view.waiting,
    }
}

pub(super) fn unexpected(response: &Response) -> Status {
    st::reason(
        tonic::Code::Internal,
        pb::ErrorReason::Internal,
        format!("unexpected state machine response {response:?}"),
    )
}
