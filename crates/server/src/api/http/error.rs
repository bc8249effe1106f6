//! Errors of the JSON API: a gRPC status (with its `ErrorDetail`, from `api/status.rs`)
//! or a refusal of the HTTP layer itself becomes an HTTP status and a JSON body with the
//! same reason names (`docs/http-api.md`, "Errors").

use crate::api::status::detail_of;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fencelock_proto::v1 as pb;
use serde::Serialize;
use tonic::Code;

/// The JSON body of an error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The `ErrorDetail` reason without its `ERROR_REASON_` prefix, or a reason of the
    /// HTTP layer (`NOT_FOUND`, `METHOD_NOT_ALLOWED`).
    pub reason: String,
    /// For people.
    pub message: String,
    /// On `NOT_LEADER`: the leader's client address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub leader: String,
    /// On `NOT_LEADER`: the leader's node id.
    #[serde(skip_serializing_if = "is_zero")]
    pub leader_id: u64,
    /// On `LIMIT_REACHED`: which limit.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub limit: String,
    /// On `COMPACTED`: the oldest start revision the node still holds.
    #[serde(skip_serializing_if = "is_zero")]
    pub oldest_revision: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The leader a `307 NOT_LEADER` answer redirects to; the dispatcher (`mod.rs`) turns it
/// into a `Location` header, as only it knows the request's path.
#[derive(Debug, Clone)]
pub struct RedirectTo(pub String);

/// An error answer: an HTTP status and its body.
#[derive(Debug, Clone)]
pub struct HttpError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl HttpError {
    /// An error of the HTTP layer (or of the JSON), with a reason of its own.
    pub fn new(status: StatusCode, reason: &str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            body: ErrorBody {
                reason: reason.into(),
                message: message.into(),
                leader: String::new(),
                leader_id: 0,
                limit: String::new(),
                oldest_revision: 0,
            },
        }
    }

    /// A request the JSON layer refuses.
    pub fn invalid(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    /// A body over the node's bound.
    pub fn body_too_large(limit: usize) -> Self {
        let mut error = HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "LIMIT_REACHED",
            format!("the request body is larger than this node's max_message_bytes ({limit})"),
        );
        error.body.limit = "http_body_bytes".into();
        error
    }

    /// An `ErrorDetail` as the HTTP answer; `code` is its gRPC status code.
    pub fn from_detail(code: Code, detail: pb::ErrorDetail) -> Self {
        let reason = match pb::ErrorReason::try_from(detail.reason) {
            Ok(pb::ErrorReason::Unspecified) | Err(_) => reason_of_code(code),
            Ok(reason) => reason
                .as_str_name()
                .strip_prefix("ERROR_REASON_")
                .unwrap_or(reason.as_str_name()),
        };
        let status = match reason {
            "NOT_LEADER" if !detail.leader_addr.is_empty() => StatusCode::TEMPORARY_REDIRECT,
            _ => status_of(reason, code),
        };
        HttpError {
            status,
            body: ErrorBody {
                reason: reason.into(),
                message: detail.message,
                leader: detail.leader_addr,
                leader_id: detail.leader_id,
                limit: detail.limit,
                oldest_revision: detail.oldest_revision,
            },
        }
    }

    /// A gRPC status of the service code as the HTTP answer.
    pub fn from_status(status: &tonic::Status) -> Self {
        // An empty `details` decodes as a default detail: no reason, no message.
        let mut detail = detail_of(status).unwrap_or_default();
        if detail.message.is_empty() {
            detail.message = status.message().to_string();
        }
        HttpError::from_detail(status.code(), detail)
    }
}

impl From<tonic::Status> for HttpError {
    fn from(status: tonic::Status) -> Self {
        HttpError::from_status(&status)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let redirect = (self.status == StatusCode::TEMPORARY_REDIRECT)
            .then(|| RedirectTo(self.body.leader.clone()));
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(redirect) = redirect {
            response.extensions_mut().insert(redirect);
        }
        response
    }
}

/// The reason of a status that carries none (not produced by the service code).
fn reason_of_code(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument | Code::OutOfRange => "INVALID_ARGUMENT",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "LIMIT_REACHED",
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            "UNAVAILABLE"
        }
        _ => "INTERNAL",
    }
}

/// The HTTP status of a reason (`docs/http-api.md` has the table); a reason it does not
/// name takes the status of its gRPC code.
fn status_of(reason: &str, code: Code) -> StatusCode {
    match reason {
        "INVALID_ARGUMENT" | "INVALID_NAME" | "INVALID_TTL" | "VALUE_TOO_LARGE"
        | "TOKEN_OVERFLOW" => StatusCode::BAD_REQUEST,
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
        "SESSION_NOT_FOUND" => StatusCode::NOT_FOUND,
        "NOT_HELD"
        | "STALE_TOKEN"
        | "ALREADY_HELD_OR_QUEUED"
        | "NOT_WAITING"
        | "REQUEST_TOO_OLD"
        | "MEMBERSHIP"
        | "AUTH" => StatusCode::CONFLICT,
        "LIMIT_REACHED" => StatusCode::TOO_MANY_REQUESTS,
        "INTERNAL" => StatusCode::INTERNAL_SERVER_ERROR,
        "NOT_LEADER" | "NO_LEADER" | "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "NO_SPACE" => StatusCode::INSUFFICIENT_STORAGE,
        // A watch's start position older than the history the node holds.
        "COMPACTED" => StatusCode::GONE,
        _ => status_of_code(code),
    }
}

/// The usual HTTP status of a gRPC code.
fn status_of_code(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::status;

    #[test]
    fn a_not_leader_naming_the_leader_is_a_redirect_with_the_leader_in_the_body() {
        let error = HttpError::from_status(&status::not_leader(
            1,
            Some(crate::api::leader::Leader {
                id: 2,
                client_addr: "127.0.0.1:7002".into(),
            }),
        ));
        assert_eq!(error.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(error.body.reason, "NOT_LEADER");
        assert_eq!(error.body.leader, "127.0.0.1:7002");
        assert_eq!(error.body.leader_id, 2);
    }

    #[test]
    fn no_known_leader_is_unavailable_without_a_redirect() {
        let error = HttpError::from_status(&status::not_leader(1, None));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.body.reason, "NO_LEADER");
    }

    #[test]
    fn every_reason_of_the_service_has_its_name_and_a_status() {
        for value in 1..=64 {
            let Ok(reason) = pb::ErrorReason::try_from(value) else {
                continue;
            };
            let error = HttpError::from_detail(
                Code::FailedPrecondition,
                pb::ErrorDetail {
                    reason: value,
                    ..Default::default()
                },
            );
            assert_eq!(
                format!("ERROR_REASON_{}", error.body.reason),
                reason.as_str_name()
            );
            assert!(
                error.status.is_client_error() || error.status.is_server_error(),
                "{reason:?}: {}",
                error.status
            );
        }
    }

    #[test]
    fn a_detail_without_reason_takes_one_from_its_code() {
        let error = HttpError::from_detail(
            Code::Unauthenticated,
            pb::ErrorDetail {
                message: "who?".into(),
                ..Default::default()
            },
        );
        assert_eq!(error.status, StatusCode::UNAUTHORIZED);
        assert_eq!(error.body.reason, "UNAUTHENTICATED");
        assert_eq!(error.body.message, "who?");
    }
}
