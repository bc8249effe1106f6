//! `POST /v1/locks/watch`: the gRPC watch stream as JSON lines, or as server-sent events
//! when the client asks for `text/event-stream`. The stream ends when the client closes
//! the connection (the body is dropped, which ends the watch as a cancelled gRPC stream
//! would), or after an error line.

use super::error::HttpError;
use super::handlers::grpc_request;
use super::{Api, JsonBody, wire};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_server::Locks;
use futures::StreamExt;
use serde::Serialize;
use std::convert::Infallible;

/// The framing of a watch stream.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// One JSON object per line.
    JsonLines,
    /// Server-sent events.
    EventStream,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Framing {
        let wants_events = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.contains("text/event-stream"));
        if wants_events {
            Framing::EventStream
        } else {
            Framing::JsonLines
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::JsonLines => "application/x-ndjson",
            Framing::EventStream => "text/event-stream",
        }
    }

    /// One event or the error that ends the stream, framed.
    fn frame(self, item: Result<pb::WatchEvent, tonic::Status>) -> Vec<u8> {
        #[derive(Serialize)]
        struct ErrorLine {
            error: super::error::ErrorBody,
        }
        let (event_name, json) = match item {
            Ok(event) => (None, serde_json::to_vec(&wire::WatchEvent::from(event))),
            Err(status) => (
                Some("error"),
                serde_json::to_vec(&ErrorLine {
                    error: HttpError::from_status(&status).body,
                }),
            ),
        };
        // Serializing these plain structs cannot fail; an empty object keeps the framing.
        let json = json.unwrap_or_else(|_| b"{}".to_vec());
        let mut framed = Vec::with_capacity(json.len() + 24);
        match self {
            Framing::JsonLines => {
                framed.extend_from_slice(&json);
                framed.push(b'\n');
            }
            Framing::EventStream => {
                if let Some(name) = event_name {
                    framed.extend_from_slice(format!("event: {name}\n").as_bytes());
                }
                framed.extend_from_slice(b"data: ");
                framed.extend_from_slice(&json);
                framed.extend_from_slice(b"\n\n");
            }
        }
        framed
    }
}

pub(super) async fn watch(
    State(api): State<Api>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<wire::Watch>,
) -> Result<Response, HttpError> {
    let framing = Framing::of(&headers);
    let events = api
        .locks
        .watch(grpc_request(headers, body.into()))
        .await?
        .into_inner();
    let framed = events.map(move |item| Ok::<_, Infallible>(framing.frame(item)));
    let mut response = Body::from_stream(framed).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
