//! The JSON forms of the API (`docs/http-api.md`) and their conversions to and from the
//! protobuf messages. Requests refuse unknown fields; left-out fields take the protobuf
//! default, so a request means what the same gRPC request would.

use fencelock_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Byte strings as standard, padded base64 (what Go's `encoding/json` writes for `[]byte`).
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// A 16-byte client id as a UUID string.
fn uuid_string(bytes: &[u8]) -> String {
    Uuid::from_slice(bytes)
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// The name of a protobuf enum value without its type's prefix (`LOCK_MODE_SHARED` →
/// `SHARED`).
fn enum_name(full: &'static str, prefix: &str) -> &'static str {
    full.strip_prefix(prefix).unwrap_or(full)
}

/// A lock mode.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// One holder.
    #[default]
    Exclusive,
    /// Many holders.
    Shared,
}

impl Mode {
    fn to_pb(self) -> i32 {
        match self {
            Mode::Exclusive => pb::LockMode::Exclusive as i32,
            Mode::Shared => pb::LockMode::Shared as i32,
        }
    }

    fn from_pb(mode: i32) -> Mode {
        match pb::LockMode::try_from(mode) {
            Ok(pb::LockMode::Shared) => Mode::Shared,
            _ => Mode::Exclusive,
        }
    }
}

/// How long an acquire waits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WaitPolicy {
    /// Answer WOULD_BLOCK at once.
    #[default]
    NoWait,
    /// Up to `wait_timeout_ms`.
    Timeout,
    /// Until granted or the session ends.
    Forever,
}

/// A request id of a session's mutating call.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestId {
    seq: u64,
    first_unanswered_seq: u64,
}

impl RequestId {
    fn to_pb(self) -> pb::RequestId {
        pb::RequestId {
            seq: self.seq,
            first_unanswered_seq: self.first_unanswered_seq,
        }
    }
}

/// `POST /v1/sessions/open`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenSession {
    client_id: Option<Uuid>,
    ttl_ms: u64,
}

impl OpenSession {
    /// The protobuf request; a left-out client id is a random one.
    pub fn into_pb(self) -> pb::OpenSessionRequest {
        pb::OpenSessionRequest {
            client_id: self
                .client_id
                .unwrap_or_else(Uuid::new_v4)
                .as_bytes()
                .to_vec(),
            ttl_ms: self.ttl_ms,
        }
    }
}

/// A session's id and lease.
#[derive(Debug, Serialize)]
pub struct SessionLease {
    session_id: u64,
    ttl_ms: u64,
}

impl From<pb::OpenSessionResponse> for SessionLease {
    fn from(reply: pb::OpenSessionResponse) -> Self {
        SessionLease {
            session_id: reply.session_id,
            ttl_ms: reply.ttl_ms,
        }
    }
}

impl SessionLease {
    /// A renewed lease.
    pub fn renewed(reply: &pb::KeepAliveResponse) -> Self {
        SessionLease {
            session_id: reply.session_id,
            ttl_ms: reply.ttl_ms,
        }
    }
}

/// `POST /v1/sessions/close` and `/v1/sessions/keepalive`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionRef {
    /// The session.
    pub session_id: u64,
}

/// An empty answer, `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// `POST /v1/locks/acquire`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acquire {
    session_id: u64,
    name: String,
    mode: Mode,
    wait: WaitPolicy,
    wait_timeout_ms: u64,
    request: Option<RequestId>,
    #[serde(with = "base64_bytes")]
    value: Vec<u8>,
    lease_ttl_ms: u64,
    client_id: Option<Uuid>,
    /// A counting semaphore of this many permits (0: a plain lock).
    permits: u32,
    /// Permits this acquire takes (semaphores; 0 means 1).
    weight: u32,
    /// A re-acquire by the holding session adds a hold and returns the same token.
    reentrant: bool,
    /// Nobody is granted the lock this long after its holder's session expired or was
    /// revoked.
    lock_delay_ms: u64,
    /// Several locks at once, all or nothing (then `name`, `mode` and the fields above
    /// are left out).
    locks: Vec<LockSpec>,
}

/// One lock of a multi-lock acquire.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockSpec {
    name: String,
    mode: Mode,
    permits: u32,
    weight: u32,
    reentrant: bool,
    lock_delay_ms: u64,
}

impl Acquire {
    /// The protobuf request; the convenience form (no session) without a client id gets a
    /// random one.
    pub fn into_pb(self) -> pb::AcquireRequest {
        let client_id = match (self.client_id, self.session_id) {
            (Some(id), _) => id.as_bytes().to_vec(),
            (None, 0) => Uuid::new_v4().as_bytes().to_vec(),
            (None, _) => Vec::new(),
        };
        pb::AcquireRequest {
            session_id: self.session_id,
            name: self.name,
            mode: self.mode.to_pb(),
            wait: match self.wait {
                WaitPolicy::NoWait => pb::WaitPolicy::NoWait,
                WaitPolicy::Timeout => pb::WaitPolicy::Timeout,
                WaitPolicy::Forever => pb::WaitPolicy::Forever,
            } as i32,
            wait_timeout_ms: self.wait_timeout_ms,
            request: self.request.map(RequestId::to_pb),
            value: self.value,
            lease_ttl_ms: self.lease_ttl_ms,
            client_id,
            permits: self.permits,
            weight: self.weight,
            reentrant: self.reentrant,
            lock_delay_ms: self.lock_delay_ms,
            locks: self
                .locks
                .into_iter()
                .map(|spec| pb::LockSpec {
                    name: spec.name,
                    mode: spec.mode.to_pb(),
                    permits: spec.permits,
                    weight: spec.weight,
                    reentrant: spec.reentrant,
                    lock_delay_ms: spec.lock_delay_ms,
                })
                .collect(),
        }
    }
}

/// The answer of an acquire.
#[derive(Debug, Serialize)]
pub struct Acquired {
    outcome: &'static str,
    token: u64,
    session_id: u64,
    ttl_ms: u64,
    /// Every grant of a multi-lock, semaphore, reentrant or lock-delay acquire, in the
    /// order asked.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grants: Vec<Grant>,
}

/// One lock granted.
#[derive(Debug, Serialize)]
pub struct Grant {
    name: String,
    token: u64,
    hold_count: u32,
}

impl From<pb::AcquireResponse> for Acquired {
    fn from(reply: pb::AcquireResponse) -> Self {
        Acquired {
            outcome: pb::AcquireOutcome::try_from(reply.outcome).map_or("UNKNOWN", |o| {
                enum_name(o.as_str_name(), "ACQUIRE_OUTCOME_")
            }),
            token: reply.token,
            session_id: reply.session_id,
            ttl_ms: reply.ttl_ms,
            grants: reply
                .grants
                .into_iter()
                .map(|grant| Grant {
                    name: grant.name,
                    token: grant.token,
                    hold_count: grant.hold_count,
                })
                .collect(),
        }
    }
}

/// `POST /v1/locks/release`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Release {
    session_id: u64,
    name: String,
    token: u64,
    request: Option<RequestId>,
}

impl From<Release> for pb::ReleaseRequest {
    fn from(request: Release) -> Self {
        pb::ReleaseRequest {
            session_id: request.session_id,
            name: request.name,
            token: request.token,
            request: request.request.map(RequestId::to_pb),
        }
    }
}

/// `POST /v1/locks/verify`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Verify {
    name: String,
    token: u64,
}

impl From<Verify> for pb::VerifyRequest {
    fn from(request: Verify) -> Self {
        pb::VerifyRequest {
            name: request.name,
            token: request.token,
        }
    }
}

/// The answer of a verify.
#[derive(Debug, Serialize)]
pub struct Verified {
    current: bool,
    current_token: u64,
}

impl From<pb::VerifyResponse> for Verified {
    fn from(reply: pb::VerifyResponse) -> Self {
        Verified {
            current: reply.current,
            current_token: reply.current_token,
        }
    }
}

/// `POST /v1/locks/describe`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Describe {
    name: String,
}

impl From<Describe> for pb::DescribeRequest {
    fn from(request: Describe) -> Self {
        pb::DescribeRequest { name: request.name }
    }
}

/// A holder of a lock.
#[derive(Debug, Serialize)]
pub struct Holder {
    session_id: u64,
    token: u64,
    mode: Mode,
    #[serde(with = "base64_bytes")]
    value: Vec<u8>,
    client_id: String,
}

/// A waiter for a lock.
#[derive(Debug, Serialize)]
pub struct Waiter {
    session_id: u64,
    mode: Mode,
}

/// A lock-delay in force: the lock is granted to nobody until it ends.
#[derive(Debug, Serialize)]
pub struct LockDelay {
    delay_ms: u64,
    started_at_ms: u64,
    remaining_ms: u64,
    /// The token of the grant whose loss started it.
    token: u64,
    /// The session whose grant's loss (expiry or revocation) started it; 0 when the
    /// answering node did not see it start.
    session_id: u64,
}

/// One lock's holders and waiters, and its lock-delay when one is in force.
#[derive(Debug, Serialize)]
pub struct LockInfo {
    name: String,
    holders: Vec<Holder>,
    waiters: Vec<Waiter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_delay: Option<LockDelay>,
}

impl From<pb::LockInfo> for LockInfo {
    fn from(lock: pb::LockInfo) -> Self {
        LockInfo {
            name: lock.name,
            holders: lock
                .holders
                .into_iter()
                .map(|h| Holder {
                    session_id: h.session_id,
                    token: h.token,
                    mode: Mode::from_pb(h.mode),
                    client_id: uuid_string(&h.client_id),
                    value: h.value,
                })
                .collect(),
            waiters: lock
                .waiters
                .into_iter()
                .map(|w| Waiter {
                    session_id: w.session_id,
                    mode: Mode::from_pb(w.mode),
                })
                .collect(),
            lock_delay: lock.lock_delay.map(|d| LockDelay {
                delay_ms: d.delay_ms,
                started_at_ms: d.started_at_ms,
                remaining_ms: d.remaining_ms,
                token: d.token,
                session_id: d.session_id,
            }),
        }
    }
}

/// The answer of a describe.
#[derive(Debug, Serialize)]
pub struct Described {
    lock: Option<LockInfo>,
    revision: u64,
}

impl From<pb::DescribeResponse> for Described {
    fn from(reply: pb::DescribeResponse) -> Self {
        Described {
            lock: reply.lock.map(LockInfo::from),
            revision: reply.revision,
        }
    }
}

/// `POST /v1/locks/list`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct List {
    prefix: String,
    start_after: String,
    limit: u32,
}

impl From<List> for pb::ListRequest {
    fn from(request: List) -> Self {
        pb::ListRequest {
            prefix: request.prefix,
            start_after: request.start_after,
            limit: request.limit,
        }
    }
}

/// A page of locks.
#[derive(Debug, Serialize)]
pub struct Listed {
    locks: Vec<LockInfo>,
    next_start_after: String,
    revision: u64,
}

impl From<pb::ListResponse> for Listed {
    fn from(reply: pb::ListResponse) -> Self {
        Listed {
            locks: reply.locks.into_iter().map(LockInfo::from).collect(),
            next_start_after: reply.next_start_after,
            revision: reply.revision,
        }
    }
}

/// `POST /v1/locks/watch`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Watch {
    name: String,
    prefix: bool,
    /// Start (or resume) at this revision, replayed from the node's history (0: start
    /// with a resync at the node's applied revision).
    start_revision: u64,
    /// The first event of `start_revision` to send: after a received event, its
    /// `event_index + 1`.
    start_event: u32,
}

impl From<Watch> for pb::WatchRequest {
    fn from(request: Watch) -> Self {
        pb::WatchRequest {
            name: request.name,
            prefix: request.prefix,
            start_revision: request.start_revision,
            start_event: request.start_event,
        }
    }
}

/// One event of a watch stream.
#[derive(Debug, Serialize)]
pub struct WatchEvent {
    kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "is_zero")]
    session_id: u64,
    #[serde(skip_serializing_if = "is_zero")]
    token: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<Mode>,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    revision: u64,
    /// The event's place among the events of its revision (a resume position is
    /// `revision` and `event_index + 1`).
    event_index: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<pb::WatchEvent> for WatchEvent {
    fn from(event: pb::WatchEvent) -> Self {
        if event.resync {
            return WatchEvent {
                kind: "RESYNC",
                name: String::new(),
                session_id: 0,
                token: 0,
                mode: None,
                value: None,
                revision: event.revision,
                event_index: 0,
            };
        }
        WatchEvent {
            kind: pb::EventKind::try_from(event.kind)
                .map_or("UNKNOWN", |k| enum_name(k.as_str_name(), "EVENT_KIND_")),
            name: event.name,
            session_id: event.session_id,
            token: event.token,
            mode: Some(Mode::from_pb(event.mode)),
            value: Some(base64_bytes::encode(&event.value)),
            revision: event.revision,
            event_index: event.event_index,
        }
    }
}

/// `POST /v1/locks/force-release`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForceRelease {
    name: String,
    request_id: Option<Uuid>,
}

impl From<ForceRelease> for pb::ForceReleaseRequest {
    fn from(request: ForceRelease) -> Self {
        pb::ForceReleaseRequest {
            name: request.name,
            request_id: optional_uuid(request.request_id),
        }
    }
}

fn optional_uuid(id: Option<Uuid>) -> Vec<u8> {
    id.map(|id| id.as_bytes().to_vec()).unwrap_or_default()
}

/// How many grants an admin call released.
#[derive(Debug, Serialize)]
pub struct Released {
    /// The count.
    pub released: u64,
}

/// `POST /v1/sessions/list`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListSessions {
    start_after: u64,
    limit: u32,
}

impl From<ListSessions> for pb::ListSessionsRequest {
    fn from(request: ListSessions) -> Self {
        pb::ListSessionsRequest {
            start_after: request.start_after,
            limit: request.limit,
        }
    }
}

/// A held lock of a session.
#[derive(Debug, Serialize)]
pub struct HeldLock {
    name: String,
    token: u64,
}

/// A live session.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    session_id: u64,
    client_id: String,
    ttl_ms: u64,
    held: Vec<HeldLock>,
    waiting: Vec<String>,
}

/// A page of sessions.
#[derive(Debug, Serialize)]
pub struct SessionsListed {
    sessions: Vec<SessionInfo>,
    next_start_after: u64,
    revision: u64,
}

impl From<pb::ListSessionsResponse> for SessionsListed {
    fn from(reply: pb::ListSessionsResponse) -> Self {
        SessionsListed {
            sessions: reply
                .sessions
                .into_iter()
                .map(|s| SessionInfo {
                    session_id: s.session_id,
                    client_id: uuid_string(&s.client_id),
                    ttl_ms: s.ttl_ms,
                    held: s
                        .held
                        .into_iter()
                        .map(|h| HeldLock {
                            name: h.name,
                            token: h.token,
                        })
                        .collect(),
                    waiting: s.waiting,
                })
                .collect(),
            next_start_after: reply.next_start_after,
            revision: reply.revision,
        }
    }
}

/// `POST /v1/sessions/revoke`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevokeSession {
    session_id: u64,
    request_id: Option<Uuid>,
}

impl From<RevokeSession> for pb::RevokeSessionRequest {
    fn from(request: RevokeSession) -> Self {
        pb::RevokeSessionRequest {
            session_id: request.session_id,
            request_id: optional_uuid(request.request_id),
        }
    }
}

/// A member of the cluster.
#[derive(Debug, Serialize)]
pub struct Member {
    id: u64,
    peer_addr: String,
    client_addr: String,
    voter: bool,
}

/// `GET /v1/cluster/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    node_id: u64,
    leader_id: u64,
    leader_addr: String,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    members: Vec<Member>,
    state: String,
    sessions: u64,
    locks: u64,
    last_token: u64,
}

impl From<pb::StatusResponse> for Status {
    fn from(reply: pb::StatusResponse) -> Self {
        Status {
            node_id: reply.node_id,
            leader_id: reply.leader_id,
            leader_addr: reply.leader_addr,
            term: reply.term,
            commit_index: reply.commit_index,
            applied_index: reply.applied_index,
            members: reply
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    peer_addr: m.peer_addr,
                    client_addr: m.client_addr,
                    voter: m.voter,
                })
                .collect(),
            state: reply.state,
            sessions: reply.sessions,
            locks: reply.locks,
            last_token: reply.last_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock-delay in force reaches the JSON describe, naming whose lapse it is; a lock
    /// without one has no `lock_delay`.
    #[test]
    fn a_lock_delay_shows_in_json_with_its_session() {
        let delayed = pb::LockInfo {
            name: "printers/3".into(),
            lock_delay: Some(pb::LockDelay {
                delay_ms: 10_000,
                started_at_ms: 5,
                remaining_ms: 6_000,
                session_id: 7,
                token: 41,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(LockInfo::from(delayed)).unwrap();
        assert_eq!(
            json["lock_delay"],
            serde_json::json!({
                "delay_ms": 10_000, "started_at_ms": 5, "remaining_ms": 6_000,
                "token": 41, "session_id": 7,
            })
        );
        let plain = pb::LockInfo {
            name: "printers/4".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(LockInfo::from(plain)).unwrap();
        assert!(json.get("lock_delay").is_none(), "{json}");
    }
}
