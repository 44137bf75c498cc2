//! Shared fixtures: a broker on 127.0.0.1:0 with its own state directory and admin key.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the fixture"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use tsuba_kbs::{
    AdminAuth, Broker, BrokerConfig, EvidenceTrust, HttpLimits, RunningServer, Transport,
    VerifierSet, router, serve, sign_admin_token,
};

pub(crate) const ADMIN_SEED: [u8; 32] = [7; 32];

pub(crate) fn admin_key() -> SigningKey {
    SigningKey::from_bytes(&ADMIN_SEED)
}

pub(crate) fn admin_bearer() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("Bearer {}", sign_admin_token(&admin_key(), now, now + 300))
}

/// A broker for `trust`; one that accepts simulated evidence also releases resources to
/// simulated guests (the administrator's opt-in).
pub(crate) fn broker(state: &Path, trust: EvidenceTrust, session_ttl: Duration) -> Arc<Broker> {
    broker_with(state, trust, session_ttl, trust.is_insecure())
}

pub(crate) fn broker_with(
    state: &Path,
    trust: EvidenceTrust,
    session_ttl: Duration,
    release_to_simulated: bool,
) -> Arc<Broker> {
    let mut config = BrokerConfig::new(
        state.to_path_buf(),
        AdminAuth::new(admin_key().verifying_key()),
    );
    config.session_ttl = session_ttl;
    config.insecure_release_to_simulated = release_to_simulated;
    Arc::new(Broker::new(config, VerifierSet::new(trust)).unwrap())
}

/// A broker served over plain HTTP on loopback; dropping it stops the server.
pub(crate) struct TestBroker {
    pub(crate) broker: Arc<Broker>,
    pub(crate) server: RunningServer,
}

impl TestBroker {
    pub(crate) fn start(state: &Path, trust: EvidenceTrust) -> Self {
        let broker = broker(state, trust, Duration::from_secs(300));
        let app = router(Arc::clone(&broker), HttpLimits::default());
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Transport::InsecurePlainHttpLoopbackOnly,
            app,
        )
        .unwrap();
        Self { broker, server }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.server.local_addr())
    }
}

pub(crate) fn refs(measurements: &[&str]) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "measurement".to_owned(),
        measurements.iter().map(|m| (*m).to_owned()).collect(),
    )])
}

/// The claims of an attestation token (its payload, not checked: the broker checked it).
pub(crate) fn token_payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The annotated evidence of a token's primary appraisal (`submods.cpu0`), where Trustee's tokens
/// carry the verified claims.
pub(crate) fn annotated_evidence(claims: &serde_json::Value) -> &serde_json::Value {
    &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
}

/// An answer of the router: status, the session cookie it set, and the JSON body (null if none).
pub(crate) struct Reply {
    pub(crate) status: axum::http::StatusCode,
    pub(crate) cookie: Option<String>,
    pub(crate) body: serde_json::Value,
}

/// Sends `request` through the router in process.
pub(crate) async fn call(
    app: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> Reply {
    use tower::ServiceExt as _;

    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get(axum::http::header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        cookie,
        body,
    }
}

/// The problem type of a refusal: the last segment of its `type` URI.
pub(crate) fn kind(reply: &Reply) -> &str {
    reply.body["type"]
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
}
