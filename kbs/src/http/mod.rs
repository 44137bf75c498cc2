//! The HTTP face of the broker: routes, limits and timeouts. Handlers only translate between
//! HTTP and [`Broker`](crate::Broker) calls; every error leaves through `KbsError`'s one mapping.

mod admin;
mod metrics;
mod protocol;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

use crate::broker::Broker;
use crate::error::KbsError;
use crate::session::SessionId;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body (bytes).
    pub max_body: usize,
    /// Longest time for reading a request and producing its response.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds the broker's router, with request metrics at `GET /metrics` (Prometheus text).
pub fn router(broker: Arc<Broker>, limits: HttpLimits) -> Router {
    let metrics = Arc::new(metrics::Metrics::default());
    let metrics_route = Router::new()
        .route(metrics::METRICS_PATH, get(metrics::serve))
        .with_state(Arc::clone(&metrics));
    Router::new()
        .route("/health", get(protocol::health))
        .route("/ready", get(protocol::ready))
        .route("/kbs/v0/auth", post(protocol::auth))
        .route("/kbs/v0/attest", post(protocol::attest))
        .route(
            "/kbs/v0/resource/{repo}/{kind}/{tag}",
            get(protocol::resource)
                .post(admin::set_resource)
                .delete(admin::delete_resource),
        )
        .route("/kbs/v0/admin/resources", get(admin::list_resources))
        .route(
            "/kbs/v0/resource-policy",
            get(admin::get_resource_policy)
                .post(admin::set_resource_policy)
                .delete(admin::delete_resource_policy),
        )
        .route(
            "/kbs/v0/attestation-policy",
            get(admin::get_attestation_policy)
                .post(admin::set_attestation_policy)
                .delete(admin::delete_attestation_policy),
        )
        .route(
            "/kbs/v0/reference-values",
            get(admin::get_reference_values).post(admin::set_reference_values),
        )
        .route("/kbs/v0/reference-value", post(admin::set_reference_value))
        .route(
            "/kbs/v0/reference-value/{name}",
            get(admin::get_reference_value),
        )
        .fallback(|| async { KbsError::NotFound })
        .method_not_allowed_fallback(|| async { KbsError::NotFound })
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(middleware::from_fn_with_state(
            limits.request_timeout,
            timeout,
        ))
        .with_state(broker)
        .merge(metrics_route)
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => KbsError::Timeout.into_response(),
    }
}

/// The body of a request, with the body-limit rejection mapped to a KBS error.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, KbsError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            KbsError::PayloadTooLarge
        } else {
            KbsError::Body(axum::Error::new(rejection))
        }
    })
}

fn session_id(headers: &HeaderMap) -> Option<SessionId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(SessionId::from_cookie_header)
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
}
