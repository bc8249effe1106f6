//! The HTTP/JSON API (`docs/http-api.md`, `docs/openapi.yaml`): JSON routes under `/v1/`
//! served on the client listener next to gRPC. [`with_json_routes`] puts them beside the
//! gRPC services: a request whose `content-type` is `application/grpc*` goes to tonic,
//! any other to the JSON routes. The handlers transcode: they build the gRPC request and
//! call the same service objects as gRPC (`handlers.rs`), and map errors in `error.rs`.

mod error;
mod handlers;
mod watch;
mod wire;

pub use error::{ErrorBody, HttpError};

use super::{ClusterService, LocksService};
use crate::node::Node;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use axum::routing::{MethodRouter, get, post};
use error::RedirectTo;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::Service;
use tonic::service::Routes;

/// What the JSON handlers share: the service objects gRPC serves (so stream limits and
/// counters are one), and the body bound (the node's `max_message_bytes`).
#[derive(Clone)]
pub struct Api {
    locks: Arc<LocksService>,
    cluster: Arc<ClusterService>,
    max_body_bytes: usize,
}

impl Api {
    /// The JSON API of `node` over the service objects its gRPC server uses.
    pub fn new(node: &Node, locks: Arc<LocksService>, cluster: Arc<ClusterService>) -> Self {
        Api {
            locks,
            cluster,
            max_body_bytes: node.config().api_limits.max_message_bytes,
        }
    }
}

/// Every JSON route: path, method, handler. `docs/openapi.yaml` lists the same
/// (`tests/http_api.rs` checks it).
fn route_handlers() -> Vec<(&'static str, Method, MethodRouter<Api>)> {
    vec![
        (
            "/v1/sessions/open",
            Method::POST,
            post(handlers::open_session),
        ),
        (
            "/v1/sessions/close",
            Method::POST,
            post(handlers::close_session),
        ),
        (
            "/v1/sessions/keepalive",
            Method::POST,
            post(handlers::keep_alive),
        ),
        (
            "/v1/sessions/list",
            Method::POST,
            post(handlers::list_sessions),
        ),
        (
            "/v1/sessions/revoke",
            Method::POST,
            post(handlers::revoke_session),
        ),
        ("/v1/locks/acquire", Method::POST, post(handlers::acquire)),
        ("/v1/locks/release", Method::POST, post(handlers::release)),
        ("/v1/locks/verify", Method::POST, post(handlers::verify)),
        ("/v1/locks/describe", Method::POST, post(handlers::describe)),
        ("/v1/locks/list", Method::POST, post(handlers::list)),
        ("/v1/locks/watch", Method::POST, post(watch::watch)),
        (
            "/v1/locks/force-release",
            Method::POST,
            post(handlers::force_release),
        ),
        (
            "/v1/cluster/status",
            Method::GET,
            get(handlers::cluster_status),
        ),
    ]
}

/// The served routes as (path, method), in the order of the route table.
pub fn routes() -> Vec<(&'static str, Method)> {
    route_handlers()
        .into_iter()
        .map(|(path, method, _)| (path, method))
        .collect()
}

/// The JSON router: the routes, refusals of unknown routes and methods as JSON, and the
/// body bound.
fn json_router(api: Api) -> Router {
    let max_body = api.max_body_bytes;
    route_handlers()
        .into_iter()
        .fold(Router::new(), |router, (path, _, handler)| {
            router.route(path, handler)
        })
        .fallback(handlers::unknown_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api)
}

/// `grpc` and the JSON routes of `api` on one service: `application/grpc*` requests go
/// to `grpc`, the rest to the JSON routes. `https` is whether the listener serves TLS
/// (the scheme of a redirect's `Location`).
pub fn with_json_routes(grpc: Routes, api: Api, https: bool) -> Routes {
    let dispatch = Dispatch {
        grpc: grpc.prepare().into_axum_router(),
        json: json_router(api),
        scheme: if https { "https" } else { "http" },
    };
    Routes::from(Router::new().fallback_service(dispatch))
}

/// Sends each request to gRPC or to the JSON routes by its content type, and turns a
/// JSON answer's [`RedirectTo`] into a `Location` on the leader with the same path.
#[derive(Clone)]
struct Dispatch {
    grpc: Router,
    json: Router,
    scheme: &'static str,
}

fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

impl Service<Request> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if is_grpc(&request) {
            return Box::pin(self.grpc.call(request));
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let scheme = self.scheme;
        let answer = self.json.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(RedirectTo(leader)) = response.extensions_mut().remove::<RedirectTo>()
                && let Ok(location) = HeaderValue::try_from(format!("{scheme}://{leader}{path}"))
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        })
    }
}

/// A JSON request body, read whatever its `content-type` says (an empty body is `{}`),
/// refused with a JSON error when malformed, of the wrong shape or over the body bound.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Api> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, api: &Api) -> Result<Self, HttpError> {
        let bytes = Bytes::from_request(request, api)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    HttpError::body_too_large(api.max_body_bytes)
                } else {
                    HttpError::invalid(format!("cannot read the request body: {rejection}"))
                }
            })?;
        let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(json)
            .map(JsonBody)
            .map_err(|e| HttpError::invalid(format!("invalid JSON request body: {e}")))
    }
}
