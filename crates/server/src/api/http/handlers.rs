//! The JSON routes' handlers: each builds the gRPC request (the `authorization` header
//! travels as its metadata) and calls the same service code as gRPC, then turns the
//! reply into JSON. Dropping a handler's future (the client went away) drops the service
//! call, with the same effect as a cancelled gRPC call (a queued acquire's wait is
//! withdrawn).

use super::error::HttpError;
use super::wire;
use super::{Api, JsonBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_server::Cluster;
use fencelock_proto::v1::locks_server::Locks;
use tonic::metadata::MetadataMap;

/// What a handler answers.
type Answer<T> = Result<Json<T>, HttpError>;

/// `message` as a gRPC request carrying the HTTP request's headers as metadata.
pub(super) fn grpc_request<T>(headers: HeaderMap, message: T) -> tonic::Request<T> {
    tonic::Request::from_parts(
        MetadataMap::from_headers(headers),
        tonic::Extensions::default(),
        message,
    )
}

pub(super) async fn open_session(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::OpenSession>,
) -> Answer<wire::SessionLease> {
    let reply = api
        .locks
        .open_session(grpc_request(headers, body.into_pb()))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn close_session(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::SessionRef>,
) -> Answer<wire::Empty> {
    let request = pb::CloseSessionRequest {
        session_id: body.session_id,
    };
    api.locks
        .close_session(grpc_request(headers, request))
        .await?;
    Ok(Json(wire::Empty {}))
}

pub(super) async fn keep_alive(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::SessionRef>,
) -> Answer<wire::SessionLease> {
    let request = pb::KeepAliveRequest {
        session_id: body.session_id,
    };
    let reply = api
        .locks
        .keep_alive_once(grpc_request(headers, request))
        .await?;
    match pb::KeepAliveStatus::try_from(reply.status) {
        Ok(pb::KeepAliveStatus::Ok) => Ok(Json(wire::SessionLease::renewed(&reply))),
        Ok(pb::KeepAliveStatus::SessionNotFound) => Err(HttpError::from_detail(
            tonic::Code::NotFound,
            pb::ErrorDetail {
                reason: pb::ErrorReason::SessionNotFound as i32,
                message: format!(
                    "session {} does not exist any more (closed or expired)",
                    reply.session_id
                ),
                ..Default::default()
            },
        )),
        Ok(pb::KeepAliveStatus::NotLeader) | Err(_) => Err(HttpError::from_detail(
            tonic::Code::Unavailable,
            pb::ErrorDetail {
                reason: pb::ErrorReason::NotLeader as i32,
                message: format!(
                    "this node is not the leader{}; the lease was not renewed",
                    if reply.leader_addr.is_empty() {
                        String::new()
                    } else {
                        format!("; the leader is at {}", reply.leader_addr)
                    }
                ),
                leader_addr: reply.leader_addr,
                ..Default::default()
            },
        )),
    }
}

pub(super) async fn list_sessions(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::ListSessions>,
) -> Answer<wire::SessionsListed> {
    let reply = api
        .locks
        .list_sessions(grpc_request(headers, body.into()))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn revoke_session(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::RevokeSession>,
) -> Answer<wire::Released> {
    let reply = api
        .locks
        .revoke_session(grpc_request(headers, body.into()))
        .await?;
    Ok(Json(wire::Released {
        released: reply.into_inner().released,
    }))
}

pub(super) async fn acquire(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::Acquire>,
) -> Answer<wire::Acquired> {
    let reply = api
        .locks
        .acquire(grpc_request(headers, body.into_pb()))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn release(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::Release>,
) -> Answer<wire::Empty> {
    api.locks
        .release(grpc_request(headers, body.into()))
        .await?;
    Ok(Json(wire::Empty {}))
}

pub(super) async fn verify(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::Verify>,
) -> Answer<wire::Verified> {
    let reply = api.locks.verify(grpc_request(headers, body.into())).await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn describe(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::Describe>,
) -> Answer<wire::Described> {
    let reply = api
        .locks
        .describe(grpc_request(headers, body.into()))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::List>,
) -> Answer<wire::Listed> {
    let reply = api.locks.list(grpc_request(headers, body.into())).await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn force_release(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::ForceRelease>,
) -> Answer<wire::Released> {
    let reply = api
        .locks
        .force_release(grpc_request(headers, body.into()))
        .await?;
    Ok(Json(wire::Released {
        released: reply.into_inner().released,
    }))
}

pub(super) async fn cluster_status(
    State(api): State<Api>,
    headers: HeaderMap,
) -> Answer<wire::Status> {
    let reply = api
        .cluster
        .status(grpc_request(headers, pb::StatusRequest {}))
        .await?;
    Ok(Json(reply.into_inner().into()))
}

pub(super) async fn unknown_route() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; the JSON API is under /v1/ (docs/http-api.md)",
    )
}

pub(super) async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take this method (docs/openapi.yaml)",
    )
}
