//! The client authenticates the broker before it says anything: over HTTPS, by a CA or by a
//! public-key pin, with no built-in roots. An impostor that answers every step of the protocol,
//! with a certificate of its own, is refused during the TLS handshake, before the client asks
//! its attester for evidence or sends a single request.

#![allow(
    clippy::unwrap_used,
    reason = "integration tests: a failed unwrap is a failed test"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tsuba_attestation_agent::kbs::{
    BrokerTrust, EvidenceProvider, InsecureSampleEvidence, KbsClient, KbsClientConfig,
    KbsClientError, SpkiPin,
};
use tsuba_kbs::{EvidenceTrust, ResourcePath, RunningServer, Transport};

/// A CA, and a broker certificate it issued for `names`.
struct Pki {
    ca_pem: String,
    ca_key: KeyPair,
    leaf_pem: String,
    leaf_key: KeyPair,
}

fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tsuba test broker CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_key,
        leaf_pem: leaf.pem(),
        leaf_key,
    }
}

/// The pin computed independently of `SpkiPin`: SHA-256 over the key's DER SPKI as rcgen
/// serialises it.
fn pin_of(key: &KeyPair) -> SpkiPin {
    SpkiPin::parse(&format!(
        "sha256:{}",
        hex::encode(Sha256::digest(key.public_key_der()))
    ))
    .unwrap()
}

/// A broker serving `default/key/1` over HTTPS with the leaf and the CA in its chain.
fn serve(pki: &Pki, state: &std::path::Path) -> RunningServer {
    let broker = common::broker(
        state,
        EvidenceTrust::InsecureAcceptSample,
        Duration::from_secs(60),
    );
    broker
        .set_reference_values(&common::refs(&["abcde"]))
        .unwrap();
    broker
        .set_resource(&ResourcePath::parse("default/key/1").unwrap(), b"over-tls")
        .unwrap();
    let chain_pem = format!("{}{}", pki.leaf_pem, pki.ca_pem);
    let (chain, key) = tsuba_kbs::load_pem(
        chain_pem.as_bytes(),
        pki.leaf_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let app = tsuba_kbs::router(broker, tsuba_kbs::HttpLimits::default());
    tsuba_kbs::serve(
        "127.0.0.1:0".parse().unwrap(),
        Transport::Https {
            cert_chain: chain,
            key,
        },
        app,
    )
    .unwrap()
}

/// Sample evidence that counts how often it was asked for.
#[derive(Default)]
struct Counting {
    inner: InsecureSampleEvidence,
    asked: AtomicUsize,
}

impl EvidenceProvider for Counting {
    fn tee(&self) -> &'static str {
        self.inner.tee()
    }

    fn evidence(
        &self,
        binding: &[u8; 48],
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.inner.evidence(binding)
    }
}

async fn fetch(url: &str, trust: BrokerTrust) -> (Result<Vec<u8>, KbsClientError>, usize) {
    let evidence = Arc::new(Counting {
        inner: InsecureSampleEvidence::with_launch_digest("abcde"),
        ..Counting::default()
    });
    let mut config = KbsClientConfig::new(url, trust);
    config.attempts = 3;
    config.backoff = Duration::from_millis(10);
    let client =
        KbsClient::new(config, Arc::clone(&evidence) as Arc<dyn EvidenceProvider>).unwrap();
    let result = client
        .get_resource("kbs:///default/key/1")
        .await
        .map(|secret| secret.to_vec());
    (result, evidence.asked.load(Ordering::SeqCst))
}

/// `kbs_http_requests_total{endpoint="auth"}` as the broker counts it.
async fn auth_requests(url: &str, ca_pem: &str) -> u64 {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kbs_http_requests_total{endpoint=\"auth\"} "))
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn pins_match_an_independent_computation() {
    let pki = pki(&["localhost"]);
    assert_eq!(
        SpkiPin::of_pem_certificate(pki.ca_pem.as_bytes()).unwrap(),
        pin_of(&pki.ca_key)
    );
    assert_eq!(
        SpkiPin::of_pem_certificate(pki.leaf_pem.as_bytes()).unwrap(),
        pin_of(&pki.leaf_key)
    );
    assert_ne!(pin_of(&pki.ca_key), pin_of(&pki.leaf_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_is_accepted_by_its_ca_pin_its_own_pin_or_its_ca() {
    let pki = pki(&["localhost"]);
    let state = tempfile::tempdir().unwrap();
    let server = serve(&pki, state.path());
    let url = format!("https://localhost:{}", server.local_addr().port());
    for trust in [
        BrokerTrust::Pin(pin_of(&pki.ca_key)),
        BrokerTrust::Pin(pin_of(&pki.leaf_key)),
        BrokerTrust::ca_pem(pki.ca_pem.as_bytes()).unwrap(),
    ] {
        let (result, asked) = fetch(&url, trust.clone()).await;
        assert_eq!(result.unwrap(), b"over-tls", "{trust:?}");
        assert_eq!(asked, 1, "{trust:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_answering_every_step_is_refused_before_evidence_is_asked_for() {
    // The real broker's CA, as the guest's measured configuration pins it.
    let real = pki(&["localhost"]);
    // The impostor: a working broker with sim evidence accepted and the resource in place,
    // under a CA of its own.
    let fake = pki(&["localhost"]);
    let state = tempfile::tempdir().unwrap();
    let server = serve(&fake, state.path());
    let url = format!("https://localhost:{}", server.local_addr().port());
    // It does answer every step for a client that trusts it.
    let (result, _) = fetch(&url, BrokerTrust::Pin(pin_of(&fake.ca_key))).await;
    assert_eq!(result.unwrap(), b"over-tls");
    let auth_before = auth_requests(&url, &fake.ca_pem).await;
    assert_eq!(auth_before, 1);

    for trust in [
        BrokerTrust::Pin(pin_of(&real.ca_key)),
        BrokerTrust::Pin(pin_of(&real.leaf_key)),
        BrokerTrust::ca_pem(real.ca_pem.as_bytes()).unwrap(),
    ] {
        let (result, asked) = fetch(&url, trust.clone()).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, KbsClientError::Untrusted { url: u, .. } if u.ends_with("/kbs/v0/auth")),
            "{trust:?}: {err:?}"
        );
        assert!(!err.is_transient(), "an impostor is not retried");
        assert_eq!(asked, 0, "{trust:?}: evidence was produced for an impostor");
    }
    // The pin failure names itself in the error chain the host would see.
    let (result, _) = fetch(&url, BrokerTrust::Pin(pin_of(&real.ca_key))).await;
    let chain = error_chain(&result.unwrap_err());
    assert!(
        chain.contains("no key matching the measured pin"),
        "{chain}"
    );
    // Not one request reached the impostor's HTTP layer.
    assert_eq!(auth_requests(&url, &fake.ca_pem).await, auth_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_ca_still_checks_the_broker_name() {
    // The CA is the pinned one, but it issued this certificate for another name: a CA pin
    // trusts the CA to name brokers, not every certificate it ever signed.
    let pki = pki(&["other.example"]);
    let state = tempfile::tempdir().unwrap();
    let server = serve(&pki, state.path());
    let url = format!("https://localhost:{}", server.local_addr().port());
    let (result, asked) = fetch(&url, BrokerTrust::Pin(pin_of(&pki.ca_key))).await;
    assert!(
        matches!(result, Err(KbsClientError::Untrusted { .. })),
        "{result:?}"
    );
    assert_eq!(asked, 0);
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}
