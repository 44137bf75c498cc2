//! End to end on loopback: tsuba's KBS client against the broker, over HTTP and HTTPS.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestBroker, admin_bearer, refs};
use tsuba_attestation_agent::kbs::{
    BrokerTrust, InsecureSampleEvidence, KbsClient, KbsClientConfig, KbsClientError, TeeKeyKind,
};
use tsuba_kbs::{EvidenceTrust, ResourcePath, Transport};

fn client(url: &str, evidence: InsecureSampleEvidence, key: TeeKeyKind) -> KbsClient {
    let mut config = KbsClientConfig::new(url, BrokerTrust::InsecurePlainHttp);
    config.key_kind = key;
    config.attempts = 2;
    config.backoff = Duration::from_millis(10);
    KbsClient::new(config, Arc::new(evidence)).unwrap()
}

async fn upload(url: &str, path: &str, bytes: &'static [u8]) -> reqwest::StatusCode {
    reqwest::Client::new()
        .post(format!("{url}/kbs/v0/resource/{path}"))
        .header("authorization", admin_bearer())
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_evidence_with_reference_measurement_gets_the_resource() {
    let state = tempfile::tempdir().unwrap();
    let kbs = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
    kbs.broker.set_reference_values(&refs(&["abcde"])).unwrap();
    assert_eq!(
        upload(&kbs.url(), "default/key/1", b"interop-secret").await,
        200
    );

    for key in [TeeKeyKind::EcP256, TeeKeyKind::Rsa2048] {
        let client = client(&kbs.url(), InsecureSampleEvidence::default(), key);
        let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
        assert_eq!(&secret[..], b"interop-secret");
        // Second fetch reuses the cached token.
        let again = client.get_resource("kbs:///default/key/1").await.unwrap();
        assert_eq!(&again[..], b"interop-secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurement_not_a_reference_value_is_refused_with_the_reason() {
    let state = tempfile::tempdir().unwrap();
    let kbs = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
    kbs.broker.set_reference_values(&refs(&["abcde"])).unwrap();
    assert_eq!(upload(&kbs.url(), "default/key/1", b"s").await, 200);
    let client = client(
        &kbs.url(),
        InsecureSampleEvidence::with_launch_digest("ffff"),
        TeeKeyKind::EcP256,
    );
    let err = client
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    match err {
        KbsClientError::Refused {
            step,
            status,
            kind,
            detail,
        } => {
            assert_eq!(
                (step, status, kind.as_str()),
                ("attest", 401, "AttestationDenied")
            );
            assert!(
                detail.contains("measurement is not a reference value"),
                "{detail}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_without_the_insecure_option_refuses_sample_evidence() {
    let state = tempfile::tempdir().unwrap();
    let kbs = TestBroker::start(state.path(), EvidenceTrust::HardwareOnly);
    kbs.broker.set_reference_values(&refs(&["abcde"])).unwrap();
    let client = client(
        &kbs.url(),
        InsecureSampleEvidence::default(),
        TeeKeyKind::EcP256,
    );
    let err = client
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KbsClientError::Refused { step: "auth", status: 400, kind, .. } if kind == "UnsupportedTee"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_upload_and_fetch_loses_nothing() {
    let state = tempfile::tempdir().unwrap();
    let token;
    {
        let kbs = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
        kbs.broker.set_reference_values(&refs(&["abcde"])).unwrap();
        kbs.broker
            .set_policy(
                tsuba_kbs::PolicyKind::Resource,
                "package policy\nallow := data[\"resource-path\"][2] == \"1\"\n",
            )
            .unwrap();
        assert_eq!(upload(&kbs.url(), "default/key/1", b"persisted").await, 200);
        assert_eq!(upload(&kbs.url(), "default/key/2", b"hidden").await, 200);
        let client = client(
            &kbs.url(),
            InsecureSampleEvidence::default(),
            TeeKeyKind::EcP256,
        );
        token = client.attest().await.unwrap();
    } // broker stopped here
    let kbs = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
    let client = client(
        &kbs.url(),
        InsecureSampleEvidence::default(),
        TeeKeyKind::EcP256,
    );
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"persisted");
    // The resource policy survived too.
    let denied = client
        .get_resource("kbs:///default/key/2")
        .await
        .unwrap_err();
    assert!(
        matches!(&denied, KbsClientError::Refused { kind, .. } if kind == "PolicyDeny"),
        "{denied:?}"
    );
    // And so did the token signing key: a token from before the restart is still accepted.
    let status = reqwest::Client::new()
        .get(format!("{}/kbs/v0/resource/default/key/1", kbs.url()))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(
        kbs.broker
            .list_resources()
            .unwrap()
            .contains(&"default/key/1".to_owned())
    );
    let _ = ResourcePath::parse("default/key/1").unwrap();
}

async fn bearer_status(url: &str, token: &str) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .get(format!("{url}/kbs/v0/resource/default/key/1"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_under_simulation_die_when_the_trust_mode_changes() {
    let state = tempfile::tempdir().unwrap();
    let token;
    {
        let kbs = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
        kbs.broker.set_reference_values(&refs(&["abcde"])).unwrap();
        assert_eq!(upload(&kbs.url(), "default/key/1", b"s").await, 200);
        token = client(
            &kbs.url(),
            InsecureSampleEvidence::default(),
            TeeKeyKind::EcP256,
        )
        .attest()
        .await
        .unwrap();
        assert_eq!(bearer_status(&kbs.url(), &token).await.0, 200);
    }
    let mode =
        |state: &std::path::Path| std::fs::read_to_string(state.join("token-key.mode")).unwrap();
    assert_eq!(
        mode(state.path()),
        "insecure:accept-sample-evidence,release-to-simulated"
    );
    let key_before = std::fs::read(state.path().join("token-key.pem")).unwrap();
    // Restarted in secure mode: a new key, and the simulated token is refused.
    let kbs = TestBroker::start(state.path(), EvidenceTrust::HardwareOnly);
    assert_eq!(mode(state.path()), "secure");
    assert_ne!(
        std::fs::read(state.path().join("token-key.pem")).unwrap(),
        key_before
    );
    let (status, body) = bearer_status(&kbs.url(), &token).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["type"],
        "https://github.com/confidential-containers/kbs/errors/TokenVerification"
    );
    assert_eq!(
        body["detail"],
        "attestation token is not valid: token signature is invalid"
    );
    drop(kbs);
    // Same mode again: the key is kept.
    let key_secure = std::fs::read(state.path().join("token-key.pem")).unwrap();
    let _kbs = TestBroker::start(state.path(), EvidenceTrust::HardwareOnly);
    assert_eq!(
        std::fs::read(state.path().join("token-key.pem")).unwrap(),
        key_secure
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_guests_get_no_resource_unless_the_administrator_opts_in() {
    let state = tempfile::tempdir().unwrap();
    let broker = common::broker_with(
        state.path(),
        EvidenceTrust::InsecureAcceptSample,
        Duration::from_secs(300),
        false,
    );
    broker.set_reference_values(&refs(&["abcde"])).unwrap();
    broker
        .set_resource(&ResourcePath::parse("default/key/1").unwrap(), b"s")
        .unwrap();
    let app = tsuba_kbs::router(Arc::clone(&broker), tsuba_kbs::HttpLimits::default());
    let server = tsuba_kbs::serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        app,
    )
    .unwrap();
    let url = format!("http://{}", server.local_addr());
    let err = client(&url, InsecureSampleEvidence::default(), TeeKeyKind::EcP256)
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    match err {
        KbsClientError::Refused {
            step,
            status,
            kind,
            detail,
        } => {
            assert_eq!(
                (step, status, kind.as_str()),
                ("resource", 401, "PolicyDeny")
            );
            assert_eq!(
                detail,
                "access denied by policy: the guest's evidence is simulated and this broker does \
                 not release resources to simulated guests"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_pinned_ca() {
    let state = tempfile::tempdir().unwrap();
    let broker = common::broker(
        state.path(),
        EvidenceTrust::InsecureAcceptSample,
        Duration::from_secs(60),
    );
    broker.set_reference_values(&refs(&["abcde"])).unwrap();
    broker
        .set_resource(&ResourcePath::parse("default/key/1").unwrap(), b"over-tls")
        .unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (chain, key) = tsuba_kbs::load_pem(
        cert.cert.pem().as_bytes(),
        cert.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let app = tsuba_kbs::router(broker, tsuba_kbs::HttpLimits::default());
    let server = tsuba_kbs::serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::Https {
            cert_chain: chain,
            key,
        },
        app,
    )
    .unwrap();
    let url = format!("https://localhost:{}", server.local_addr().port());
    let config = KbsClientConfig::new(
        &url,
        BrokerTrust::ca_pem(cert.cert.pem().as_bytes()).unwrap(),
    );
    let client = KbsClient::new(config, Arc::new(InsecureSampleEvidence::default())).unwrap();
    let secret = client.get_resource("kbs:///default/key/1").await.unwrap();
    assert_eq!(&secret[..], b"over-tls");

    // Under another CA the TLS handshake fails: no fallback to anything weaker, no retry.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let mut config = KbsClientConfig::new(
        &url,
        BrokerTrust::ca_pem(other.cert.pem().as_bytes()).unwrap(),
    );
    config.attempts = 4;
    let untrusting = KbsClient::new(config, Arc::new(InsecureSampleEvidence::default())).unwrap();
    let err = untrusting
        .get_resource("kbs:///default/key/1")
        .await
        .unwrap_err();
    assert!(matches!(err, KbsClientError::Untrusted { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let state = tempfile::tempdir().unwrap();
    let broker = common::broker(
        state.path(),
        EvidenceTrust::HardwareOnly,
        Duration::from_secs(60),
    );
    let app = tsuba_kbs::router(broker, tsuba_kbs::HttpLimits::default());
    let err = tsuba_kbs::serve(
        "0.0.0.0:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        app,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        tsuba_kbs::ServerError::PlainHttpNotLoopback { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_calls_in_quick_succession_each_use_a_fresh_token() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    let state = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(state.path(), EvidenceTrust::InsecureAcceptSample);
    let pem = common::admin_key()
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    let admin = tsuba_kbs::AdminClient::new(&broker.url(), &pem, None).unwrap();
    // Several calls within the same second: a replayed token would be refused.
    let path = ResourcePath::parse("default/key/9").unwrap();
    admin.set_resource(&path, b"nine".to_vec()).await.unwrap();
    admin.set_reference_values(&refs(&["abcde"])).await.unwrap();
    assert_eq!(admin.reference_values().await.unwrap(), refs(&["abcde"]));
    for _ in 0..5 {
        assert_eq!(
            admin.list_resources().await.unwrap(),
            vec!["default/key/9".to_owned()]
        );
    }
    // The calls that speak Trustee's shapes manage this broker too.
    admin
        .set_reference_value("init_data", &["ab".to_owned(), "cd".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        admin.reference_value("init_data").await.unwrap(),
        ["ab", "cd"]
    );
    assert_eq!(
        admin.reference_values().await.unwrap()["measurement"],
        ["abcde"]
    );
    let rego = "package policy\ndefault allow := false\n";
    admin
        .set_policy(tsuba_kbs::PolicyKind::Attestation, rego)
        .await
        .unwrap();
    assert_eq!(
        admin
            .policy(tsuba_kbs::PolicyKind::Attestation)
            .await
            .unwrap(),
        rego
    );
    // Deleting it brings the built-in default back.
    admin
        .delete_policy(tsuba_kbs::PolicyKind::Attestation)
        .await
        .unwrap();
    assert_eq!(
        admin
            .policy(tsuba_kbs::PolicyKind::Attestation)
            .await
            .unwrap(),
        tsuba_kbs::DEFAULT_ATTESTATION_POLICY
    );
    admin.delete_resource(&path).await.unwrap();
    assert!(admin.list_resources().await.unwrap().is_empty());
    assert!(matches!(
        admin.delete_resource(&path).await,
        Err(tsuba_kbs::AdminClientError::Refused { status: 404, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_calls_from_one_address_are_limited_by_its_address() {
    let state = tempfile::tempdir().unwrap();
    let mut config = tsuba_kbs::BrokerConfig::new(
        state.path().to_path_buf(),
        tsuba_kbs::AdminAuth::new(common::admin_key().verifying_key()),
    );
    config.max_sessions_per_client = 2;
    let broker = Arc::new(
        tsuba_kbs::Broker::new(
            config,
            tsuba_kbs::VerifierSet::new(EvidenceTrust::InsecureAcceptSample),
        )
        .unwrap(),
    );
    let server = tsuba_kbs::serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::InsecurePlainHttpLoopbackOnly,
        tsuba_kbs::router(broker, tsuba_kbs::HttpLimits::default()),
    )
    .unwrap();
    let url = format!("http://{}/kbs/v0/auth", server.local_addr());
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"version":"0.4.0","tee":"sample","extra-params":""}"#)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        answers.push((status, body));
    }
    assert_eq!((answers[0].0, answers[1].0), (200, 200));
    assert_eq!(answers[2].0, 429);
    assert_eq!(
        answers[2].1["type"],
        "https://github.com/confidential-containers/kbs/errors/TooManySessionsFromClient"
    );
    assert_eq!(
        answers[2].1["detail"],
        "session is not usable: too many sessions waiting for attestation from this client"
    );
}
