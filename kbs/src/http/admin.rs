//! The admin endpoints. Every handler checks the admin token first, before reading anything else.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::Deserialize;

use super::{authorization, body};
use crate::broker::{Broker, PolicyKind, decode_policy_upload};
use crate::error::KbsError;
use crate::store::ResourcePath;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyUpload {
    policy: String,
}

pub(super) async fn set_resource(
    State(broker): State<Arc<Broker>>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let path = ResourcePath::new(&repo, &kind, &tag).map_err(KbsError::ResourcePath)?;
    let request = body(request)?;
    tokio::task::spawn_blocking(move || broker.set_resource(&path, &request))
        .await
        .map_err(KbsError::Task)??;
    Ok(().into_response())
}

pub(super) async fn list_resources(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let list = tokio::task::spawn_blocking(move || broker.list_resources())
        .await
        .map_err(KbsError::Task)??;
    Ok(Json(list).into_response())
}

async fn set_policy(
    broker: Arc<Broker>,
    kind: PolicyKind,
    headers: &HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    check_admin(&broker, headers).await?;
    let request = body(request)?;
    let upload: PolicyUpload =
        serde_json::from_slice(&request).map_err(KbsError::MalformedRequest)?;
    let text = decode_policy_upload(&upload.policy)?;
    tokio::task::spawn_blocking(move || broker.set_policy(kind, &text))
        .await
        .map_err(KbsError::Task)??;
    Ok(().into_response())
}

async fn get_policy(
    broker: Arc<Broker>,
    kind: PolicyKind,
    headers: &HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, headers).await?;
    let text = tokio::task::spawn_blocking(move || broker.current_policy(kind))
        .await
        .map_err(KbsError::Task)??;
    let policy = URL_SAFE_NO_PAD.encode(text);
    Ok(Json(serde_json::json!({ "policy": policy })).into_response())
}

pub(super) async fn set_resource_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    set_policy(broker, PolicyKind::Resource, &headers, request).await
}

pub(super) async fn get_resource_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    get_policy(broker, PolicyKind::Resource, &headers).await
}

pub(super) async fn set_attestation_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    set_policy(broker, PolicyKind::Attestation, &headers, request).await
}

pub(super) async fn get_attestation_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    get_policy(broker, PolicyKind::Attestation, &headers).await
}

pub(super) async fn set_reference_values(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let request = body(request)?;
    let values: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&request).map_err(KbsError::MalformedRequest)?;
    tokio::task::spawn_blocking(move || broker.set_reference_values(&values))
        .await
        .map_err(KbsError::Task)??;
    Ok(().into_response())
}

pub(super) async fn get_reference_values(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let values = tokio::task::spawn_blocking(move || broker.reference_values())
        .await
        .map_err(KbsError::Task)??;
    Ok(Json(values).into_response())
}

/// Checks the admin token off the I/O threads (a shared store records it in the database).
async fn check_admin(broker: &Arc<Broker>, headers: &HeaderMap) -> Result<(), KbsError> {
    let broker = Arc::clone(broker);
    let header = authorization(headers).map(str::to_owned);
    tokio::task::spawn_blocking(move || broker.check_admin(header.as_deref()))
        .await
        .map_err(KbsError::Task)?
}
