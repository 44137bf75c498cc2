//! The attestation endpoints: auth, attest, resource.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{authorization, body, session_id};
use crate::broker::Broker;
use crate::error::KbsError;
use crate::session::COOKIE_NAME;
use crate::store::ResourcePath;

pub(super) async fn auth(
    State(broker): State<Arc<Broker>>,
    extensions: Extensions,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    let request = body(request)?;
    // The peer address, when served over TCP (`serve` records it); sessions are counted by it.
    let client = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    // A shared store is a database round trip: keep it off the I/O threads.
    let response = tokio::task::spawn_blocking(move || broker.auth(client, &request))
        .await
        .map_err(KbsError::Task)??;
    let cookie = format!(
        "{COOKIE_NAME}={}; Expires={}",
        response.session.id.as_str(),
        httpdate::fmt_http_date(response.expires)
    );
    let mut http = Json(response.challenge).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        http.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(http)
}

/// `GET /health`: the process is up and serving HTTP (liveness).
pub(super) async fn health() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /ready`: 200 only while the store can serve (a database reachable and migrated to this
/// broker's schema); 503 with the reason otherwise.
pub(super) async fn ready(State(broker): State<Arc<Broker>>) -> Result<Response, KbsError> {
    tokio::task::spawn_blocking(move || broker.ready())
        .await
        .map_err(KbsError::Task)??;
    Ok(Json(serde_json::json!({"status": "ready"})).into_response())
}

pub(super) async fn attest(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    let request = body(request)?;
    let session = session_id(&headers);
    // Evidence verification is CPU-bound (signatures, policy): keep it off the I/O threads.
    let token = tokio::task::spawn_blocking({
        let broker = Arc::clone(&broker);
        let session = session.clone();
        move || broker.attest(session.as_ref(), &request)
    })
    .await
    .map_err(KbsError::Task)??;
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}

pub(super) async fn resource(
    State(broker): State<Arc<Broker>>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    let path = ResourcePath::new(&repo, &kind, &tag).map_err(KbsError::ResourcePath)?;
    let session = session_id(&headers);
    let auth = authorization(&headers).map(str::to_owned);
    let jwe = tokio::task::spawn_blocking(move || {
        broker.resource(session.as_ref(), auth.as_deref(), &path)
    })
    .await
    .map_err(KbsError::Task)??;
    Ok(Json(jwe).into_response())
}
