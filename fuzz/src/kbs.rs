//! The key broker's request bodies (`Broker::auth`, `Broker::attest`) and the guest's JWE
//! opening of the broker's answers (`TeeKey::decrypt`).

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;

use tsuba_attestation_agent::kbs::{TeeKey, TeeKeyKind};
use tsuba_kbs::{
    AdminAuth, BindingDigest, Broker, BrokerConfig, EvidenceTrust, VerifierOptions,
    build_verifiers, generate_admin_key,
};

use crate::split_selector;

/// In a `kbs_attest` input, each occurrence of this marker is replaced by the session's nonce,
/// so that the fuzzer gets past the nonce check it could never guess.
pub const NONCE_MARKER: &[u8] = b"@NONCE@@";
/// ... and this one by the standard base64 of the binding (nonce, `tee-pubkey`,
/// `additional_evidence`), the report data sample evidence must carry.
pub const BINDING_MARKER: &[u8] = b"@BINDING@@";

struct BrokerUnderTest {
    broker: Broker,
    _state: tempfile::TempDir,
}

/// A broker with every verifier this build has (simulated evidence accepted, so that the
/// `sample` verifier is reached too), in a temporary state directory.
fn broker() -> &'static Broker {
    static BROKER: OnceLock<BrokerUnderTest> = OnceLock::new();
    &BROKER
        .get_or_init(|| {
            let state = tempfile::tempdir()
                .unwrap_or_else(|e| panic!("cannot create a broker state directory: {e}"));
            let (_, public_pem) =
                generate_admin_key().unwrap_or_else(|e| panic!("cannot make an admin key: {e}"));
            let admin = AdminAuth::from_public_key_pem(&public_pem)
                .unwrap_or_else(|e| panic!("cannot read the admin key: {e}"));
            let mut config = BrokerConfig::new(state.path().join("kbs"), admin);
            // Each attest input opens a session: keep them short-lived, never full.
            config.session_ttl = Duration::from_secs(2);
            config.max_sessions = 100_000;
            let options = VerifierOptions {
                trust: EvidenceTrust::InsecureAcceptSimulatedAndSample,
                ..VerifierOptions::hardware_only()
            };
            let verifiers =
                build_verifiers(&options).unwrap_or_else(|e| panic!("cannot build verifiers: {e}"));
            let broker = Broker::new(config, verifiers)
                .unwrap_or_else(|e| panic!("cannot start the broker: {e}"));
            BrokerUnderTest {
                broker,
                _state: state,
            }
        })
        .broker
}

/// `POST /kbs/v0/auth` body.
pub(crate) fn auth(data: &[u8]) {
    if let Ok(response) = broker().auth(None, data) {
        assert!(
            !response.session.nonce.is_empty(),
            "auth issued an empty nonce"
        );
    }
}

/// `POST /kbs/v0/attest` body, in a session opened for the TEE the first byte selects (snp,
/// tdx, sample); [`NONCE_MARKER`] stands for that session's nonce.
pub(crate) fn attest(data: &[u8]) {
    let (selector, body) = split_selector(data);
    let tee = match selector % 3 {
        0 => "snp",
        1 => "tdx",
        _ => "sample",
    };
    let auth = format!(r#"{{"version":"0.4.0","tee":"{tee}","extra-params":""}}"#);
    let session = broker()
        .auth(None, auth.as_bytes())
        .unwrap_or_else(|e| panic!("a valid auth request was refused: {e}"));
    let nonce = &session.session.nonce;
    let body = replace(body, NONCE_MARKER, nonce.as_bytes());
    let body = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) if contains(&body, BINDING_MARKER) => {
            let additional = value["tee-evidence"]["additional_evidence"]
                .as_str()
                .unwrap_or_default();
            let binding =
                BindingDigest::compute(nonce, &value["runtime-data"]["tee-pubkey"], additional);
            let encoded = base64::engine::general_purpose::STANDARD.encode(binding.as_bytes());
            replace(&body, BINDING_MARKER, encoded.as_bytes())
        }
        _ => body,
    };
    let _ = broker().attest(Some(&session.session.id), &body);
    // The nonce is single use, whatever the first attempt did.
    assert!(
        broker().attest(Some(&session.session.id), &body).is_err(),
        "a session's nonce was accepted twice"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// `TeeKey::decrypt` of a broker answer, with the guest's EC (even first byte) or RSA key.
pub(crate) fn jwe_tee_key(data: &[u8]) {
    static KEYS: OnceLock<(TeeKey, TeeKey)> = OnceLock::new();
    let (ec, rsa) = KEYS.get_or_init(|| {
        let make =
            |kind| TeeKey::generate(kind).unwrap_or_else(|e| panic!("cannot make a tee key: {e}"));
        (make(TeeKeyKind::EcP256), make(TeeKeyKind::Rsa2048))
    });
    let (selector, body) = split_selector(data);
    let key = if selector % 2 == 0 { ec } else { rsa };
    let _ = key.decrypt(body);
}
