//! Bad input through the whole HTTP stack (router, limits, handlers): each case is a clear 4xx in

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]
//! the KBS problem shape, and nothing is released or stored.

mod common;

use common::{Reply, call, kind};

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tower::ServiceExt;
use tsuba_kbs::{BindingDigest, EvidenceTrust, HttpLimits, ResourcePath, router};

fn post(uri: &str, cookie: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(body.into()).unwrap()
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

/// The admin upload of `text` as the policy at `path` (`/kbs/v0/resource-policy`, ...).
async fn upload_policy(app: &Router, path: &str, text: &str) -> Reply {
    let body = json!({"policy": URL_SAFE_NO_PAD.encode(text)}).to_string();
    call(
        app,
        Request::post(path)
            .header("authorization", common::admin_bearer())
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

fn tee_key() -> Value {
    let secret = p256::SecretKey::from_slice(&[3u8; 32]).unwrap();
    let point = p256::EncodedPoint::from(secret.public_key());
    json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
           "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
           "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())})
}

fn attestation(nonce: &str, bound_nonce: &str) -> String {
    let binding = BindingDigest::compute(bound_nonce, &tee_key(), "");
    json!({
        "init-data": null,
        "runtime-data": {"nonce": nonce, "tee-pubkey": tee_key()},
        "tee-evidence": {"primary_evidence": {"report_data": STANDARD.encode(binding.as_bytes()), "svn": "1"},
                         "additional_evidence": ""},
    })
    .to_string()
}

const AUTH: &str = r#"{"version":"0.4.0","tee":"sample","extra-params":""}"#;

struct Fixture {
    _state: tempfile::TempDir,
    broker: std::sync::Arc<tsuba_kbs::Broker>,
    app: Router,
}

fn fixture(session_ttl: Duration) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let broker = common::broker(
        state.path(),
        EvidenceTrust::InsecureAcceptSample,
        session_ttl,
    );
    broker
        .set_reference_values(&common::refs(&["abcde"]))
        .unwrap();
    broker
        .set_resource(
            &ResourcePath::parse("default/key/1").unwrap(),
            b"top-secret",
        )
        .unwrap();
    let limits = HttpLimits {
        max_body: 64 * 1024,
        request_timeout: Duration::from_secs(10),
    };
    let app = router(std::sync::Arc::clone(&broker), limits);
    Fixture {
        _state: state,
        broker,
        app,
    }
}

async fn challenge(app: &Router) -> (String, String) {
    let reply = call(app, post("/kbs/v0/auth", None, AUTH)).await;
    assert_eq!(reply.status, StatusCode::OK);
    (
        reply.cookie.unwrap(),
        reply.body["nonce"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn good_flow_works_through_the_router() {
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    assert_eq!(STANDARD.decode(&nonce).unwrap().len(), 32);
    let reply = call(
        &f.app,
        post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let token = reply.body["token"].as_str().unwrap().to_owned();
    // By cookie and by bearer token.
    for headers in [
        [("cookie", cookie.as_str())],
        [("authorization", &format!("Bearer {token}"))],
    ] {
        let reply = call(&f.app, get("/kbs/v0/resource/default/key/1", &headers)).await;
        assert_eq!(reply.status, StatusCode::OK);
        let protected = URL_SAFE_NO_PAD
            .decode(reply.body["protected"].as_str().unwrap())
            .unwrap();
        let header: Value = serde_json::from_slice(&protected).unwrap();
        assert_eq!(header["alg"], "ECDH-ES+A256KW");
        assert_eq!(header["enc"], "A256GCM");
    }
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let f = fixture(Duration::from_secs(60));
    for body in ["{", "[]", r#"{"version":"0.4.0"}"#, "\u{0}"] {
        let reply = call(&f.app, post("/kbs/v0/auth", None, body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(kind(&reply), "MalformedRequest");
        assert!(reply.cookie.is_none());
    }
    let reply = call(
        &f.app,
        post(
            "/kbs/v0/auth",
            None,
            r#"{"version":"0.3.0","tee":"sample","extra-params":""}"#,
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "ProtocolVersion")
    );
    let reply = call(
        &f.app,
        post(
            "/kbs/v0/auth",
            None,
            r#"{"version":"0.4.0","tee":"quantum","extra-params":""}"#,
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "UnsupportedTee")
    );
    // A known TEE this broker runs no verifier for.
    let reply = call(
        &f.app,
        post(
            "/kbs/v0/auth",
            None,
            r#"{"version":"0.4.0","tee":"cca","extra-params":""}"#,
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "UnsupportedTee")
    );

    let (cookie, _) = challenge(&f.app).await;
    let reply = call(&f.app, post("/kbs/v0/attest", Some(&cookie), "{not json")).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "MalformedRequest")
    );
    let reply = call(&f.app, post("/kbs/v0/nothing", None, "")).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::NOT_FOUND, "NotFound")
    );
}

fn with_init_data(attestation: &str, init_data: Value) -> String {
    let mut request: Value = serde_json::from_str(attestation).unwrap();
    request["init-data"] = init_data;
    request.to_string()
}

const INITDATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"note\" = \"a\"\n";

#[tokio::test]
async fn malformed_init_data_is_400_and_leaves_the_nonce_usable() {
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    let good = attestation(&nonce, &nonce);
    for (init_data, expected) in [
        (json!({"format": "json", "body": "{}"}), "InvalidInitData"),
        (
            json!({"format": "TOML", "body": INITDATA}),
            "InvalidInitData",
        ),
        (
            json!({"format": "toml", "body": "not [toml"}),
            "InvalidInitData",
        ),
        (
            json!({"format": "toml", "body": INITDATA.replace("0.1.0", "0.2.0")}),
            "InvalidInitData",
        ),
        (
            json!({"format": "toml", "body": INITDATA.replace("sha256", "sm3")}),
            "InvalidInitData",
        ),
        // Truncated in the middle of the [data] table.
        (
            json!({"format": "toml", "body": &INITDATA[..INITDATA.len() - 4]}),
            "InvalidInitData",
        ),
        (json!({"format": "toml"}), "MalformedRequest"),
        (json!({"format": 1, "body": INITDATA}), "MalformedRequest"),
        (json!("toml"), "MalformedRequest"),
    ] {
        let reply = call(
            &f.app,
            post(
                "/kbs/v0/attest",
                Some(&cookie),
                with_init_data(&good, init_data.clone()),
            ),
        )
        .await;
        assert_eq!(
            (reply.status, kind(&reply)),
            (StatusCode::BAD_REQUEST, expected),
            "{init_data}: {:?}",
            reply.body
        );
    }
    // The format is quoted back, bounded.
    let reply = call(
        &f.app,
        post(
            "/kbs/v0/attest",
            Some(&cookie),
            with_init_data(&good, json!({"format": "x".repeat(20_000), "body": ""})),
        ),
    )
    .await;
    assert_eq!(kind(&reply), "InvalidInitData");
    assert!(reply.body["detail"].as_str().unwrap().len() < 400);
    // None of these spent the session's nonce.
    let reply = call(&f.app, post("/kbs/v0/attest", Some(&cookie), good)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn init_data_with_evidence_that_cannot_bind_it_is_refused() {
    // Trustee's sample evidence has no HOST_DATA or MRCONFIGID: a document cannot be checked,
    // so it is refused rather than passed to the policies unchecked.
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    let request = with_init_data(
        &attestation(&nonce, &nonce),
        json!({"format": "toml", "body": INITDATA}),
    );
    let reply = call(&f.app, post("/kbs/v0/attest", Some(&cookie), request)).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "InitDataMismatch")
    );
    assert_eq!(
        reply.body["detail"],
        "init-data refused: sample evidence carries no HOST_DATA or MRCONFIGID to check init-data against"
    );
    // Nothing was attested.
    let reply = call(
        &f.app,
        get(
            "/kbs/v0/resource/default/key/1",
            &[("cookie", cookie.as_str())],
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn replayed_nonce_is_refused() {
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    let body = attestation(&nonce, &nonce);
    assert_eq!(
        call(&f.app, post("/kbs/v0/attest", Some(&cookie), body.clone()))
            .await
            .status,
        StatusCode::OK
    );
    let replay = call(&f.app, post("/kbs/v0/attest", Some(&cookie), body.clone())).await;
    assert_eq!(
        (replay.status, kind(&replay)),
        (StatusCode::UNAUTHORIZED, "InvalidSession")
    );
    assert!(
        replay.body["detail"]
            .as_str()
            .unwrap()
            .contains("already used")
    );
    // The same evidence in a fresh session is bound to the old nonce: refused.
    let (cookie2, _) = challenge(&f.app).await;
    let reply = call(&f.app, post("/kbs/v0/attest", Some(&cookie2), body)).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "NonceMismatch")
    );
}

#[tokio::test]
async fn evidence_for_another_nonce_is_refused_and_leaves_the_nonce_usable() {
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    let reply = call(
        &f.app,
        post(
            "/kbs/v0/attest",
            Some(&cookie),
            attestation(&nonce, "some other nonce"),
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "AttestationFailed")
    );
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .contains("report data")
    );
    // Nothing is released on that session.
    let reply = call(
        &f.app,
        get("/kbs/v0/resource/default/key/1", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "TokenNotFound")
    );
    assert!(reply.body.get("ciphertext").is_none());
    // Whoever saw the cookie could not burn the challenge with bad evidence: the guest's own
    // attestation still succeeds, once.
    let body = attestation(&nonce, &nonce);
    let reply = call(&f.app, post("/kbs/v0/attest", Some(&cookie), body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let replay = call(&f.app, post("/kbs/v0/attest", Some(&cookie), body)).await;
    assert_eq!(
        (replay.status, kind(&replay)),
        (StatusCode::UNAUTHORIZED, "InvalidSession")
    );
}

#[tokio::test]
async fn expired_session_is_refused() {
    let f = fixture(Duration::from_millis(200));
    let (cookie, nonce) = challenge(&f.app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = call(
        &f.app,
        post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce)),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "InvalidSession")
    );
    assert!(reply.body["detail"].as_str().unwrap().contains("expired"));
    let reply = call(
        &f.app,
        post("/kbs/v0/attest", None, attestation(&nonce, &nonce)),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "MissingCookie")
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let f = fixture(Duration::from_secs(60));
    let big = format!(
        r#"{{"version":"0.4.0","tee":"sample","extra-params":"{}"}}"#,
        "a".repeat(70 * 1024)
    );
    let reply = call(&f.app, post("/kbs/v0/auth", None, big)).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
    );
    let reply = call(
        &f.app,
        Request::post("/kbs/v0/resource/default/key/9")
            .header("authorization", common::admin_bearer())
            .body(Body::from(vec![0u8; 70 * 1024]))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        !f.broker
            .list_resources()
            .unwrap()
            .contains(&"default/key/9".to_owned())
    );
}

#[tokio::test]
async fn resource_path_traversal_is_refused() {
    let f = fixture(Duration::from_secs(60));
    let (cookie, nonce) = challenge(&f.app).await;
    call(
        &f.app,
        post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce)),
    )
    .await;
    // Each path: the exact status and problem type. A segment that is empty or decodes to `..`,
    // a slash or anything outside [A-Za-z0-9._-] is an invalid path (400); a path with another
    // number of segments matches no route (404). None reaches the store.
    let bad_path = (StatusCode::BAD_REQUEST, "InvalidResourcePath");
    let no_route = (StatusCode::NOT_FOUND, "NotFound");
    for (path, expected) in [
        ("/kbs/v0/resource/../key/1", bad_path),
        ("/kbs/v0/resource/default/../1", bad_path),
        ("/kbs/v0/resource/default/key/..", bad_path),
        ("/kbs/v0/resource/./key/1", bad_path),
        ("/kbs/v0/resource/%2e%2e/key/1", bad_path),
        ("/kbs/v0/resource/%2E%2E/key/1", bad_path),
        ("/kbs/v0/resource/default/key/..%2F..%2Fetc", bad_path),
        ("/kbs/v0/resource/default/key/%2Fetc%2Fpasswd", bad_path),
        ("/kbs/v0/resource/default/k%20y/1", bad_path),
        ("/kbs/v0/resource/default/key/a%00b", bad_path),
        ("/kbs/v0/resource/default/key/..%5C..%5Cetc", bad_path),
        ("/kbs/v0/resource/default/key/%C3%A9", bad_path),
        ("/kbs/v0/resource/default/../../key/1", no_route),
        ("/kbs/v0/resource/default/key", no_route),
        ("/kbs/v0/resource/default/key/1/extra", no_route),
        ("/kbs/v0/resource//key/1", bad_path),
    ] {
        let reply = call(&f.app, get(path, &[("cookie", &cookie)])).await;
        assert_eq!((reply.status, kind(&reply)), expected, "{path}");
        assert!(reply.body.get("ciphertext").is_none(), "{path}");
    }
    // The same cookie still reads the real resource: the refusals were about the paths.
    let reply = call(
        &f.app,
        get("/kbs/v0/resource/default/key/1", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.get("ciphertext").is_some());
}

#[tokio::test]
async fn unauthenticated_admin_calls_are_refused_and_change_nothing() {
    let f = fixture(Duration::from_secs(60));
    let foreign = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        format!("Bearer {}", tsuba_kbs::sign_admin_token(&key, 0, u64::MAX))
    };
    let policy =
        json!({"policy": URL_SAFE_NO_PAD.encode("package policy\nallow := true\n")}).to_string();
    for auth in [
        None,
        Some("Bearer garbage"),
        Some(foreign.as_str()),
        Some("Basic YWRtaW46YWRtaW4="),
    ] {
        let with_auth = |builder: axum::http::request::Builder| match auth {
            Some(value) => builder.header("authorization", value),
            None => builder,
        };
        let requests = [
            with_auth(Request::post("/kbs/v0/resource/default/key/1"))
                .body(Body::from("evil"))
                .unwrap(),
            with_auth(Request::post("/kbs/v0/resource-policy"))
                .body(Body::from(policy.clone()))
                .unwrap(),
            with_auth(Request::post("/kbs/v0/attestation-policy"))
                .body(Body::from(policy.clone()))
                .unwrap(),
            with_auth(Request::post("/kbs/v0/reference-values"))
                .body(Body::from(r#"{"measurement":["x"]}"#))
                .unwrap(),
            with_auth(Request::get("/kbs/v0/reference-values"))
                .body(Body::empty())
                .unwrap(),
            with_auth(Request::get("/kbs/v0/resource-policy"))
                .body(Body::empty())
                .unwrap(),
            with_auth(Request::get("/kbs/v0/admin/resources"))
                .body(Body::empty())
                .unwrap(),
        ];
        for request in requests {
            let uri = request.uri().to_string();
            let reply = call(&f.app, request).await;
            assert_eq!(
                (reply.status, kind(&reply)),
                (StatusCode::UNAUTHORIZED, "AdminAuth"),
                "{uri} {auth:?}"
            );
        }
    }
    assert_eq!(
        f.broker.reference_values().unwrap()["measurement"],
        vec!["abcde".to_owned()]
    );
    assert!(
        f.broker
            .policy(tsuba_kbs::PolicyKind::Resource)
            .contains("ear.status")
    );
    // The stored resource is untouched: attest and read it.
    let (cookie, nonce) = challenge(&f.app).await;
    call(
        &f.app,
        post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce)),
    )
    .await;
    assert_eq!(
        call(
            &f.app,
            get("/kbs/v0/resource/default/key/1", &[("cookie", &cookie)])
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_api_round_trips_and_refuses_bad_policy() {
    let f = fixture(Duration::from_secs(60));
    let text = "package policy\ndefault allow := false\n";
    let reply = upload_policy(&f.app, "/kbs/v0/resource-policy", text).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = call(
        &f.app,
        get(
            "/kbs/v0/resource-policy",
            &[("authorization", &common::admin_bearer())],
        ),
    )
    .await;
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(reply.body["policy"].as_str().unwrap())
            .unwrap(),
        text.as_bytes()
    );

    let reply = upload_policy(
        &f.app,
        "/kbs/v0/attestation-policy",
        "package policy\nallow if {",
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "InvalidPolicy")
    );
    assert!(
        f.broker
            .policy(tsuba_kbs::PolicyKind::Attestation)
            .contains("reference value")
    );

    // A policy written to another input (tsuba's before it took Trustee's) compiles, but its
    // allow is undefined for this broker's input: refused with the reason, the stored policy
    // unchanged.
    let other_input = "package policy\nallow if input.resource.tag == \"1\"\n";
    let reply = upload_policy(&f.app, "/kbs/v0/resource-policy", other_input).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::BAD_REQUEST, "InvalidPolicy")
    );
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("allow is undefined for a representative resource input"),
        "{detail}"
    );
    assert_eq!(f.broker.policy(tsuba_kbs::PolicyKind::Resource), text);
    // One written to Trustee's input (data.plugin, the EAR claims) decides, and is taken.
    let trustee_style = "package policy\nallow if {\n  data.plugin == \"resource\"\n  \
        input.submods.cpu0[\"ear.status\"] == \"affirming\"\n}\n";
    let reply = upload_policy(&f.app, "/kbs/v0/resource-policy", trustee_style).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        f.broker.policy(tsuba_kbs::PolicyKind::Resource),
        trustee_style
    );
    let reply = upload_policy(&f.app, "/kbs/v0/resource-policy", text).await;
    assert_eq!(reply.status, StatusCode::OK);

    let reply = call(
        &f.app,
        Request::post("/kbs/v0/reference-values")
            .header("authorization", common::admin_bearer())
            .body(Body::from(r#"{"measurement":["abcde","00"]}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = call(
        &f.app,
        get(
            "/kbs/v0/reference-values",
            &[("authorization", &common::admin_bearer())],
        ),
    )
    .await;
    assert_eq!(reply.body, json!({"measurement": ["abcde", "00"]}));

    // The deny-all resource policy now refuses an attested guest: 401 PolicyDeny, as Trustee.
    let (cookie, nonce) = challenge(&f.app).await;
    assert_eq!(
        call(
            &f.app,
            post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce))
        )
        .await
        .status,
        StatusCode::OK
    );
    let reply = call(
        &f.app,
        get("/kbs/v0/resource/default/key/1", &[("cookie", &cookie)]),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "PolicyDeny")
    );
    assert!(reply.body.get("ciphertext").is_none());
}

#[tokio::test]
async fn forged_and_missing_tokens_are_refused() {
    let f = fixture(Duration::from_secs(60));
    let reply = call(&f.app, get("/kbs/v0/resource/default/key/1", &[])).await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "TokenNotFound")
    );
    assert_eq!(reply.body["detail"], "attestation token not found");
    let reply = call(
        &f.app,
        get(
            "/kbs/v0/resource/default/key/1",
            &[("authorization", "Bearer a.b.c")],
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "TokenVerification")
    );
    let reply = call(
        &f.app,
        get(
            "/kbs/v0/resource/default/key/1",
            &[("cookie", "kbs-session-id=00000000000000000000000000000000")],
        ),
    )
    .await;
    assert_eq!(
        (reply.status, kind(&reply)),
        (StatusCode::UNAUTHORIZED, "TokenNotFound")
    );
}

/// The exact request bytes of the wire capture between guest-components' client and Trustee's
/// broker (`kbs-wire-format.md`, exchange 1) get the same shape of answer from this broker.
#[tokio::test]
async fn wire_capture_auth_request_gets_a_trustee_shaped_challenge() {
    let f = fixture(Duration::from_secs(300));
    let captured = r#"{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512","sm3"]}}"#;
    let response = f
        .app
        .clone()
        .oneshot(post("/kbs/v0/auth", None, captured))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let (pair, expires) = cookie.split_once("; Expires=").unwrap();
    let id = pair.strip_prefix("kbs-session-id=").unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(expires.ends_with(" GMT"), "{expires}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["extra-params", "nonce"]);
    assert_eq!(body["extra-params"], "");
    assert_eq!(
        STANDARD
            .decode(body["nonce"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // The capture notes that `"extra-params":""` (a string) is accepted too.
    let reply = call(&f.app, post("/kbs/v0/auth", None, AUTH)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

async fn metrics_text(app: &Router) -> String {
    let response = app.clone().oneshot(get("/metrics", &[])).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
        .parse()
        .unwrap()
}

fn requests(text: &str, endpoint: &str) -> u64 {
    sample(
        text,
        &format!("kbs_http_requests_total{{endpoint=\"{endpoint}\"}}"),
    )
}

fn failures(text: &str, endpoint: &str, class: &str) -> u64 {
    sample(
        text,
        &format!("kbs_http_request_failures_total{{endpoint=\"{endpoint}\",class=\"{class}\"}}"),
    )
}

#[tokio::test]
async fn metrics_count_requests_and_failures_per_endpoint() {
    let f = fixture(Duration::from_secs(60));
    let before = metrics_text(&f.app).await;
    for endpoint in ["auth", "attest", "resource", "admin", "other"] {
        assert_eq!(requests(&before, endpoint), 0, "{endpoint}");
    }

    // auth: one good, one malformed.
    let (cookie, nonce) = challenge(&f.app).await;
    assert_eq!(
        call(&f.app, post("/kbs/v0/auth", None, "{")).await.status,
        StatusCode::BAD_REQUEST
    );
    // attest: one for another nonce (refused), then a good one on a fresh session.
    assert_eq!(
        call(
            &f.app,
            post(
                "/kbs/v0/attest",
                Some(&cookie),
                attestation(&nonce, "other")
            )
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let (cookie, nonce) = challenge(&f.app).await;
    assert_eq!(
        call(
            &f.app,
            post("/kbs/v0/attest", Some(&cookie), attestation(&nonce, &nonce))
        )
        .await
        .status,
        StatusCode::OK
    );
    // resource: released with the cookie, refused without.
    let path = "/kbs/v0/resource/default/key/1";
    assert_eq!(
        call(&f.app, get(path, &[("cookie", &cookie)])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&f.app, get(path, &[])).await.status,
        StatusCode::UNAUTHORIZED
    );
    // admin: one refused, one accepted.
    assert_eq!(
        call(&f.app, get("/kbs/v0/admin/resources", &[]))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = common::admin_bearer();
    assert_eq!(
        call(
            &f.app,
            get("/kbs/v0/admin/resources", &[("authorization", &bearer)])
        )
        .await
        .status,
        StatusCode::OK
    );
    // other: an unknown path.
    assert_eq!(
        call(&f.app, get("/nowhere", &[])).await.status,
        StatusCode::NOT_FOUND
    );

    let after = metrics_text(&f.app).await;
    assert_eq!(requests(&after, "auth"), 3);
    assert_eq!(failures(&after, "auth", "4xx"), 1);
    assert_eq!(requests(&after, "attest"), 2);
    assert_eq!(failures(&after, "attest", "4xx"), 1);
    assert_eq!(requests(&after, "resource"), 2);
    assert_eq!(failures(&after, "resource", "4xx"), 1);
    assert_eq!(requests(&after, "admin"), 2);
    assert_eq!(failures(&after, "admin", "4xx"), 1);
    assert_eq!(requests(&after, "other"), 1);
    assert_eq!(failures(&after, "other", "4xx"), 1);
    for endpoint in ["auth", "attest", "resource", "admin", "other"] {
        assert_eq!(failures(&after, endpoint, "5xx"), 0, "{endpoint}");
        assert_eq!(
            sample(
                &after,
                &format!("kbs_http_request_duration_seconds_count{{endpoint=\"{endpoint}\"}}")
            ),
            requests(&after, endpoint),
            "{endpoint}"
        );
    }
    // Reading the metrics is not itself counted, and no path, cookie or token leaks into them.
    assert_eq!(requests(&metrics_text(&f.app).await, "other"), 1);
    for secret in ["default/key", "nowhere", &cookie, &bearer[7..], &nonce] {
        assert!(!after.contains(secret), "{secret}");
    }
}

#[tokio::test]
async fn replayed_admin_token_is_refused_and_a_fresh_one_accepted() {
    let f = fixture(Duration::from_secs(60));
    let list = |bearer: &str| get("/kbs/v0/admin/resources", &[("authorization", bearer)]);
    let bearer = common::admin_bearer();
    assert_eq!(call(&f.app, list(&bearer)).await.status, StatusCode::OK);
    let replay = call(&f.app, list(&bearer)).await;
    assert_eq!(
        (replay.status, kind(&replay)),
        (StatusCode::UNAUTHORIZED, "AdminAuth")
    );
    assert!(
        replay.body["detail"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{:?}",
        replay.body
    );
    // A replayed write stores nothing.
    let write = |bearer: &str, tag: &str| {
        Request::post(format!("/kbs/v0/resource/default/key/{tag}"))
            .header("authorization", bearer)
            .body(Body::from("value"))
            .unwrap()
    };
    let bearer = common::admin_bearer();
    assert_eq!(
        call(&f.app, write(&bearer, "2")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&f.app, write(&bearer, "3")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let stored = f.broker.list_resources().unwrap();
    assert!(stored.contains(&"default/key/2".to_owned()), "{stored:?}");
    assert!(!stored.contains(&"default/key/3".to_owned()), "{stored:?}");
    let fresh = common::admin_bearer();
    let reply = call(
        &f.app,
        get("/kbs/v0/admin/resources", &[("authorization", &fresh)]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn health_is_liveness_and_ready_follows_the_store() {
    let f = fixture(Duration::from_secs(60));
    let health = call(&f.app, get("/health", &[])).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = call(&f.app, get("/ready", &[])).await;
    assert_eq!(
        (ready.status, ready.body.clone()),
        (StatusCode::OK, json!({"status": "ready"}))
    );
    // The state folder's resources are gone: not ready; still alive.
    std::fs::remove_dir_all(f._state.path().join("resources")).unwrap();
    let ready = call(&f.app, get("/ready", &[])).await;
    assert_eq!(
        (ready.status, kind(&ready)),
        (StatusCode::SERVICE_UNAVAILABLE, "NotReady")
    );
    // Internal causes (a path here) are logged, not sent.
    assert_eq!(ready.body["detail"], "not ready");
    assert_eq!(
        call(&f.app, get("/health", &[])).await.status,
        StatusCode::OK
    );
}
