//! Trustee's admin API against tsuba's broker: the requests Trustee's `kbs-client config` makes
//! (its `tools/kbs-client`, Trustee 78962cd4), byte for byte in shape, and the admin tokens
//! Trustee's tooling signs; and `tsuba kbs admin`'s client speaking the shapes Trustee's broker
//! takes. Trustee itself does not run here: docs/interop.md says what was and was not tried.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use common::{call, kind};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::Signer;
use serde_json::{Value, json};
use tsuba_kbs::{
    AdminAuth, AdminClient, Broker, BrokerConfig, EvidenceTrust, HttpLimits, PolicyKind,
    ResourcePath, TokenUse, VerifierSet, router,
};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT as Trustee's tooling signs one with the administrator's Ed25519 key: `kbs-client
/// --auth-private-key` (before Trustee e908c2d1) made `{"iat", "exp"}` for two hours; Trustee's
/// docker-compose set-up makes a ten-year token with `iss`, `sub`, `aud` and `role`.
fn trustee_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"EdDSA"}"#);
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = common::admin_key().sign(input.as_bytes());
    format!(
        "Bearer {input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

fn kbs_client_token() -> String {
    let iat = now();
    trustee_token(&json!({"iat": iat, "exp": iat + 7200}))
}

fn broker(admin: AdminAuth) -> (tempfile::TempDir, Arc<Broker>, Router) {
    let state = tempfile::tempdir().unwrap();
    let config = BrokerConfig::new(state.path().to_path_buf(), admin);
    let broker =
        Arc::new(Broker::new(config, VerifierSet::new(EvidenceTrust::HardwareOnly)).unwrap());
    let app = router(Arc::clone(&broker), HttpLimits::default());
    (state, broker, app)
}

/// A broker as an operator runs it for Trustee's tooling (`serve --admin-tokens reusable`):
/// `kbs-client` signs `{"iat", "exp"}` only, so two of its calls in one second carry the same
/// token, which a single-use broker refuses the second time.
fn for_kbs_client() -> (tempfile::TempDir, Arc<Broker>, Router) {
    broker(
        AdminAuth::new(common::admin_key().verifying_key()).with_token_use(TokenUse::UntilExpiry),
    )
}

fn admin(method: &str, uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", kbs_client_token())
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn kbs_client_set_and_delete_resource() {
    let (_state, broker, app) = for_kbs_client();
    let path = "/kbs/v0/resource/myrepo/secret/one";
    let reply = call(
        &app,
        admin("POST", path, "application/octet-stream", "s3cret"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(broker.list_resources().unwrap(), ["myrepo/secret/one"]);

    let reply = call(&app, admin("DELETE", path, "application/octet-stream", "")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(broker.list_resources().unwrap().is_empty());
    // Gone: a second delete says so rather than succeeding.
    let reply = call(&app, admin("DELETE", path, "application/octet-stream", "")).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::NOT_FOUND, "ResourceNotFound")
    );
    // Not without the administrator's token.
    let unsigned = Request::delete(path).body(Body::empty()).unwrap();
    assert_eq!(call(&app, unsigned).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn kbs_client_set_attestation_and_resource_policies() {
    let (_state, broker, app) = for_kbs_client();
    let rego = "package policy\ndefault allow := false\nallow if input.claims.debug == false\n";
    // set-attestation-policy --policy-file F: type and id default to "rego" and "default_cpu".
    let body =
        json!({"type": "rego", "policy_id": "default_cpu", "policy": URL_SAFE_NO_PAD.encode(rego)});
    let reply = call(
        &app,
        admin(
            "POST",
            "/kbs/v0/attestation-policy",
            "application/json",
            body.to_string(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(broker.policy(PolicyKind::Attestation), rego);

    // An id or a language this broker does not have is refused, not stored and ignored.
    for (field, value, says) in [
        ("policy_id", "gpu_policy", "one attestation policy"),
        ("type", "opa", "only \"rego\""),
    ] {
        let mut body = body.clone();
        body[field] = value.into();
        let reply = call(
            &app,
            admin(
                "POST",
                "/kbs/v0/attestation-policy",
                "application/json",
                body.to_string(),
            ),
        )
        .await;
        assert_eq!(
            (reply.status, kind(&reply)),
            (StatusCode::BAD_REQUEST, "InvalidPolicy")
        );
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
        assert_eq!(broker.policy(PolicyKind::Attestation), rego);
    }

    // set-resource-policy --affirming: Trustee's input (every submodule affirming).
    let affirming = "package policy\ndefault allow = false\nallow if {\n  count(input.submods) > 0\n  every _, submod in input.submods { submod[\"ear.status\"] == \"affirming\" }\n}\n";
    let body = json!({"policy": URL_SAFE_NO_PAD.encode(affirming)});
    let reply = call(
        &app,
        admin(
            "POST",
            "/kbs/v0/resource-policy",
            "application/json",
            body.to_string(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(broker.policy(PolicyKind::Resource), affirming);
}

#[tokio::test]
async fn kbs_client_sample_reference_values_set_one_name_and_read_back() {
    let (_state, broker, app) = for_kbs_client();
    broker
        .set_reference_values(&BTreeMap::from([
            ("measurement".to_owned(), vec!["old".to_owned()]),
            ("init_data".to_owned(), vec!["keep".to_owned()]),
        ]))
        .unwrap();
    // set-sample-reference-value measurement ab12 (a list of one string by default).
    let message = |payload: &Value| {
        json!({"version": "0.1.0", "type": "sample", "payload": STANDARD.encode(payload.to_string())})
            .to_string()
    };
    let reply = call(
        &app,
        admin(
            "POST",
            "/kbs/v0/reference-value",
            "application/json",
            message(&json!({"measurement": ["ab12"]})),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let values = broker.reference_values().unwrap();
    assert_eq!(values["measurement"], ["ab12"]);
    assert_eq!(values["init_data"], ["keep"], "other names stay");

    // get-reference-value --id measurement
    let reply = call(
        &app,
        admin(
            "GET",
            "/kbs/v0/reference-value/measurement",
            "application/json",
            "",
        ),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, json!(["ab12"]))
    );
    let reply = call(
        &app,
        admin(
            "GET",
            "/kbs/v0/reference-value/nothing",
            "application/json",
            "",
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::NOT_FOUND, "ReferenceValueNotFound")
    );

    // A provenance type this broker does not read is refused saying so.
    let body = json!({"version": "0.1.0", "type": "corim", "payload": ""}).to_string();
    let reply = call(
        &app,
        admin("POST", "/kbs/v0/reference-value", "application/json", body),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "InvalidReferenceValues")
    );
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("only \"sample\"")
    );
    assert_eq!(broker.reference_values().unwrap()["measurement"], ["ab12"]);
}

#[tokio::test]
async fn trustee_tokens_are_single_use_by_default_and_reusable_when_the_operator_says_so() {
    let request = |token: &str| {
        Request::get("/kbs/v0/reference-values")
            .header("authorization", token)
            .body(Body::empty())
            .unwrap()
    };
    let iat = now();
    let compose_token = trustee_token(&json!({
        "iss": "TrusteeInDocker", "sub": "admin", "aud": ["KBS"], "role": "admin",
        "iat": iat, "exp": iat + 315_360_000,
    }));
    let old_client_token = kbs_client_token();

    let (_state, _broker, app) = broker(AdminAuth::new(common::admin_key().verifying_key()));
    for token in [&compose_token, &old_client_token] {
        assert_eq!(call(&app, request(token)).await.status, StatusCode::OK);
        let again = call(&app, request(token)).await;
        assert_eq!(again.status, StatusCode::UNAUTHORIZED);
        assert!(
            again.body["detail"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "{:?}",
            again.body
        );
    }

    let (_state, _broker, app) = broker(
        AdminAuth::new(common::admin_key().verifying_key()).with_token_use(TokenUse::UntilExpiry),
    );
    for token in [&compose_token, &old_client_token] {
        for _ in 0..3 {
            assert_eq!(call(&app, request(token)).await.status, StatusCode::OK);
        }
    }
    // Reusable is not unchecked: an expired token, another key's, and none are refused.
    let expired = trustee_token(&json!({"iat": iat - 100, "exp": iat - 1}));
    let other = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"EdDSA"}"#);
        let input = format!(
            "{header}.{}",
            URL_SAFE_NO_PAD.encode(json!({"exp": iat + 60}).to_string())
        );
        format!(
            "Bearer {input}.{}",
            URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes())
        )
    };
    for token in [&expired, &other, &"Bearer".to_owned()] {
        assert_eq!(
            call(&app, request(token)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    // No admin key at all (Trustee's DenyAll): refused, saying why.
    let (_state, _broker, app) = broker(AdminAuth::disabled());
    let reply = call(&app, request(&compose_token)).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "AdminAuth")
    );
    assert!(reply.body["detail"].as_str().unwrap().contains("disabled"));
}

/// What a broker that takes only Trustee's admin shapes saw: method, path, body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A stand-in for Trustee's admin endpoints that checks what `tsuba kbs admin`'s client sends
/// against the shapes Trustee's broker parses (`kbs/src/api_server.rs`, `attestation/backend.rs`,
/// `rvps`) and answers as Trustee does. Not Trustee: its shapes, from its source.
async fn trustee_shaped(seen: Seen) -> (String, tokio::task::JoinHandle<()>) {
    use axum::extract::{Request as AxumRequest, State};
    use axum::response::IntoResponse;

    async fn handle(State(seen): State<Seen>, request: AxumRequest) -> axum::response::Response {
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let bearer = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()));
        seen.lock()
            .unwrap()
            .push((method.clone(), path.clone(), body.clone()));
        if !bearer {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let ok = match (method.as_str(), path.as_str()) {
            ("POST" | "DELETE", p) if p.starts_with("/kbs/v0/resource/") => true,
            // SetPolicyInput: policy_id and base64url policy (type is ignored).
            ("POST", "/kbs/v0/attestation-policy") => {
                body["policy_id"].is_string()
                    && body["policy"]
                        .as_str()
                        .is_some_and(|p| URL_SAFE_NO_PAD.decode(p).is_ok())
            }
            ("POST", "/kbs/v0/resource-policy") => body["policy"]
                .as_str()
                .is_some_and(|p| URL_SAFE_NO_PAD.decode(p).is_ok()),
            ("POST", "/kbs/v0/reference-value") => {
                body["type"] == "sample"
                    && body["payload"]
                        .as_str()
                        .and_then(|p| STANDARD.decode(p).ok())
                        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
                        .is_some_and(|p| p.is_object())
            }
            ("GET", "/kbs/v0/reference-value/measurement") => {
                return axum::Json(json!(["ab12"])).into_response();
            }
            // Trustee lists the ids of its resource policies (as its 78962cd4 build answered).
            ("GET", "/kbs/v0/resource-policy") => {
                return axum::Json(json!(["resource-policy"])).into_response();
            }
            _ => false,
        };
        if ok {
            StatusCode::OK.into_response()
        } else {
            // Trustee answers a bad admin request 401 with an ErrorInformation.
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"type": "https://github.com/confidential-containers/kbs/errors/PluginNotFound", "detail": "refused"})),
            )
                .into_response()
        }
    }

    let app = Router::new().fallback(handle).with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn tsuba_admin_client_speaks_trustees_shapes() {
    let seen = Seen::default();
    let (url, task) = trustee_shaped(Arc::clone(&seen)).await;
    let (private_pem, _) = tsuba_kbs::generate_admin_key().unwrap();
    let client = AdminClient::new(&url, &private_pem, None).unwrap();
    let path = ResourcePath::parse("myrepo/secret/one").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        client
            .set_resource(&path, b"s3cret".to_vec())
            .await
            .unwrap();
        client.delete_resource(&path).await.unwrap();
        client
            .set_policy(PolicyKind::Attestation, "package policy\n")
            .await
            .unwrap();
        client
            .set_policy(PolicyKind::Resource, "package policy\n")
            .await
            .unwrap();
        client
            .set_reference_value("measurement", &["ab12".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            client.reference_value("measurement").await.unwrap(),
            ["ab12"]
        );
        // tsuba-only endpoints fail with the broker's answer, not silently.
        assert!(matches!(
            client.list_resources().await,
            Err(tsuba_kbs::AdminClientError::Refused { status: 401, .. })
        ));
        assert!(matches!(
            client.reference_value("a/b").await,
            Err(tsuba_kbs::AdminClientError::Name(_))
        ));
        // Trustee gives no policy text back: the error says so rather than "malformed" alone.
        let err = client.policy(PolicyKind::Resource).await.unwrap_err();
        assert!(
            matches!(err, tsuba_kbs::AdminClientError::Malformed(_))
                && err
                    .to_string()
                    .contains("Trustee's answers with the ids of its policies"),
            "{err}"
        );
    })
    .await;
    task.abort();
    outcome.unwrap();
    let seen = seen.lock().unwrap();
    let calls: Vec<_> = seen.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    assert_eq!(
        calls,
        [
            "POST /kbs/v0/resource/myrepo/secret/one",
            "DELETE /kbs/v0/resource/myrepo/secret/one",
            "POST /kbs/v0/attestation-policy",
            "POST /kbs/v0/resource-policy",
            "POST /kbs/v0/reference-value",
            "GET /kbs/v0/reference-value/measurement",
            "GET /kbs/v0/admin/resources",
            "GET /kbs/v0/resource-policy",
        ]
    );
    // The attestation policy goes to Trustee's CPU policy, the one its broker evaluates.
    assert_eq!(seen[2].2["policy_id"], "default_cpu");
    assert_eq!(seen[2].2["type"], "rego");
    let payload = STANDARD
        .decode(seen[4].2["payload"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap(),
        json!({"measurement": ["ab12"]})
    );
}
