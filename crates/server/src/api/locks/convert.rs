//! Conversions between the protobuf messages and the core's types.

use super::invalid_argument;
use super::st;
use fencelock_core::{ClientId, LockMode, ReleaseReason, RequestId, Response, SessionId};
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

pub(super) fn lock_info(view: fencelock_core::LockView) -> pb::LockInfo {
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
            })
            .collect(),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| pb::Waiter {
                session_id: w.session.0,
                mode: mode_to(w.mode),
            })
            .collect(),
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
