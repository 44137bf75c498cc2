//! The admin endpoints. Every handler checks the admin token first, before reading anything else.
//!
//! Trustee's shapes where Trustee has the endpoint: a resource is set and deleted at its path,
//! a policy is uploaded as `{"policy": <base64url>}` (the attestation policy also as Trustee's
//! `{"type": "rego", "policy_id": "default_cpu", "policy": ...}`), reference values are set one
//! message at a time in Trustee's RVPS format and read back by name. tsuba's own where Trustee
//! has none: listing resources, reading a policy's text, and the whole reference-value table.

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

/// A policy upload: tsuba's `{"policy"}` or Trustee's `{"type", "policy_id", "policy"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyUpload {
    policy: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    policy_id: Option<String>,
}

/// The ids Trustee's clients name the one attestation policy by: `kbs-client`'s default, and
/// the id Trustee's broker evaluates with.
const ATTESTATION_POLICY_IDS: [&str; 2] = ["default_cpu", "default"];

/// The id Trustee stores its one resource policy under.
const RESOURCE_POLICY_ID: &str = "resource-policy";

impl PolicyUpload {
    /// Refuses an envelope that names something this broker does not have, rather than taking
    /// it and ignoring the name.
    fn check(&self, kind: PolicyKind) -> Result<(), KbsError> {
        let refuse = |reason: String| {
            Err(KbsError::InvalidPolicy(crate::policy::PolicyError::Upload(
                reason,
            )))
        };
        if let Some(language) = &self.kind
            && language != "rego"
        {
            return refuse(format!(
                "type {:?} is not supported, only \"rego\"",
                crate::rvps::bounded(language)
            ));
        }
        let Some(id) = &self.policy_id else {
            return Ok(());
        };
        match kind {
            PolicyKind::Attestation if ATTESTATION_POLICY_IDS.contains(&id.as_str()) => Ok(()),
            PolicyKind::Resource if id == RESOURCE_POLICY_ID => Ok(()),
            PolicyKind::Attestation => refuse(format!(
                "policy_id {:?}: this broker has one attestation policy, named \"default_cpu\" \
                 or \"default\"",
                crate::rvps::bounded(id)
            )),
            PolicyKind::Resource => refuse(format!(
                "policy_id {:?}: this broker has one resource policy, \"{RESOURCE_POLICY_ID}\"",
                crate::rvps::bounded(id)
            )),
        }
    }
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

pub(super) async fn delete_resource(
    State(broker): State<Arc<Broker>>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let path = ResourcePath::new(&repo, &kind, &tag).map_err(KbsError::ResourcePath)?;
    tokio::task::spawn_blocking(move || broker.delete_resource(&path))
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
    upload.check(kind)?;
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

async fn delete_policy(
    broker: Arc<Broker>,
    kind: PolicyKind,
    headers: &HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, headers).await?;
    tokio::task::spawn_blocking(move || broker.delete_policy(kind))
        .await
        .map_err(KbsError::Task)??;
    Ok(().into_response())
}

pub(super) async fn delete_resource_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    delete_policy(broker, PolicyKind::Resource, &headers).await
}

pub(super) async fn delete_attestation_policy(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    delete_policy(broker, PolicyKind::Attestation, &headers).await
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

/// `POST /kbs/v0/reference-value`: one message in Trustee's RVPS format; each name it carries
/// replaces that name's values.
pub(super) async fn set_reference_value(
    State(broker): State<Arc<Broker>>,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let request = body(request)?;
    let values = crate::rvps::parse(&request).map_err(KbsError::InvalidReferenceValues)?;
    tokio::task::spawn_blocking(move || broker.merge_reference_values(&values))
        .await
        .map_err(KbsError::Task)??;
    Ok(().into_response())
}

/// `GET /kbs/v0/reference-value/{name}`: that name's values, as a JSON list.
pub(super) async fn get_reference_value(
    State(broker): State<Arc<Broker>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, KbsError> {
    check_admin(&broker, &headers).await?;
    let mut values = tokio::task::spawn_blocking(move || broker.reference_values())
        .await
        .map_err(KbsError::Task)??;
    let list = values
        .remove(&name)
        .ok_or_else(|| KbsError::ReferenceValueNotFound {
            name: crate::rvps::bounded(&name),
        })?;
    Ok(Json(list).into_response())
}

/// Checks the admin token off the I/O threads (a shared store records it in the database).
async fn check_admin(broker: &Arc<Broker>, headers: &HeaderMap) -> Result<(), KbsError> {
    let broker = Arc::clone(broker);
    let header = authorization(headers).map(str::to_owned);
    tokio::task::spawn_blocking(move || broker.check_admin(header.as_deref()))
        .await
        .map_err(KbsError::Task)?
}
