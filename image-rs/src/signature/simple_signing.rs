//! GPG simple signing (containers-signature(5)): a signature is an OpenPGP signed message,
//! usually compressed, not detached, whose literal data is the JSON payload (`critical.type`
//! `atomic container signature`). It is accepted when the OpenPGP signature verifies with a key
//! from the policy's keyrings (`keyPath`, `keyPaths` or `keyData`), the payload parses strictly,
//! its manifest digest is the resolved manifest's digest, and its identity satisfies the
//! `signedIdentity` rule. Each signature that fails is skipped with its reason; at least one must
//! pass.
//!
//! Verification uses rpgp, a pure-Rust OpenPGP implementation: no gpg, gpgme or keyring
//! daemon in the guest.

use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use pgp::composed::{Deserializable, Message, SignedPublicKey, VerificationResult};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;
use pgp::types::{KeyDetails, VerifyingKey};

use crate::digest::Digest;
use crate::signature::identity::{DockerReference, SignedIdentity};
use crate::signature::payload::{MAX_PAYLOAD_BYTES, PayloadError, PayloadKind, SignedPayload};

/// Largest keyring file (or decoded `keyData`) accepted.
pub const MAX_KEYRING_BYTES: usize = 1024 * 1024;
/// Most keys taken from all keyrings of one requirement.
const MAX_KEYS: usize = 256;
/// Most rejection reasons kept in an error.
const MAX_REASONS: usize = 8;

/// Why a keyring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The requirement does not name exactly one of `keyPath`, `keyPaths`, `keyData`.
    #[error("signedBy needs exactly one of keyPath, keyPaths or keyData")]
    Source,
    /// A keyring file cannot be read.
    #[error("reading keyring {0}")]
    Read(String, #[source] std::io::Error),
    /// A keyring is larger than [`MAX_KEYRING_BYTES`].
    #[error("keyring {0} exceeds {MAX_KEYRING_BYTES} bytes")]
    TooLarge(String),
    /// `keyData` is not base64.
    #[error("keyData is not base64")]
    Base64(#[source] base64::DecodeError),
    /// The keyring does not parse as OpenPGP public keys.
    #[error("keyring {0} is not an OpenPGP keyring")]
    Parse(String, #[source] Box<pgp::errors::Error>),
    /// No usable key (self-signatures verified) in the keyrings.
    #[error("no usable OpenPGP public key in {0}")]
    Empty(String),
}

/// Why one signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureFailure {
    /// Not an OpenPGP message, or not a signed one.
    #[error("not an OpenPGP signed message")]
    Format(#[source] Box<pgp::errors::Error>),
    /// A message without signatures.
    #[error("the OpenPGP message is not signed")]
    NotSigned,
    /// Reading the signed data failed (corrupt compression, truncated packets, …).
    #[error("reading the signed data")]
    Read(#[source] std::io::Error),
    /// The signed data is larger than a payload may be.
    #[error("signed data exceeds {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge,
    /// No trusted key verifies the signature (unknown signer or tampered content).
    #[error("not signed by a trusted key (signer key ids: {0})")]
    UntrustedOrInvalid(String),
    /// The signature verified, but uses a hash or type that is not acceptable.
    #[error("signature uses {0}, which is not accepted")]
    Weak(String),
    /// The signature verified, but its payload is refused.
    #[error("signed payload refused")]
    Payload(#[source] PayloadError),
}

/// Why no signature was accepted.
#[derive(Debug, thiserror::Error)]
pub enum SimpleSigningError {
    /// There are no signatures for the image.
    #[error("the image has no simple-signing signature")]
    NoSignatures,
    /// Every signature failed.
    #[error("none of {total} signatures is acceptable: {}", Reasons(.reasons))]
    Rejected {
        /// How many signatures there were.
        total: usize,
        /// Why each of the first few failed (index from 1, as in `signature-N`).
        reasons: Vec<(usize, SignatureFailure)>,
    },
}

/// Renders reasons with their causes, one after the other.
struct Reasons<'a>(&'a [(usize, SignatureFailure)]);

impl fmt::Display for Reasons<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "signature-{n}: {why}")?;
            let mut cause = std::error::Error::source(why);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

/// Trusted OpenPGP public keys (primary keys and their signing subkeys).
#[derive(Debug, Clone)]
pub struct GpgKeyring {
    keys: Vec<SignedPublicKey>,
}

impl GpgKeyring {
    /// Parses one keyring, armored or binary; keys whose self-signatures do not verify are
    /// left out.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, KeyringError> {
        if bytes.len() > MAX_KEYRING_BYTES {
            return Err(KeyringError::TooLarge(what.to_owned()));
        }
        let (iter, _) = SignedPublicKey::from_reader_many(bytes)
            .map_err(|e| KeyringError::Parse(what.to_owned(), Box::new(e)))?;
        let mut keys = Vec::new();
        for key in iter.take(MAX_KEYS) {
            let key = key.map_err(|e| KeyringError::Parse(what.to_owned(), Box::new(e)))?;
            match key.verify_bindings() {
                Ok(()) => keys.push(key),
                Err(e) => tracing::warn!(
                    keyring = what,
                    key = %format!("{:X}", key.fingerprint()),
                    error = %e,
                    "skipping a key whose self-signatures do not verify"
                ),
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty(what.to_owned()));
        }
        Ok(Self { keys })
    }

    /// The keyrings a `signedBy` requirement names (exactly one of the three sources).
    pub fn from_requirement(
        key_path: Option<&str>,
        key_paths: Option<&[String]>,
        key_data: Option<&str>,
    ) -> Result<Self, KeyringError> {
        match (key_path, key_paths, key_data) {
            (Some(p), None, None) => Self::from_file(Path::new(p)),
            (None, Some(paths), None) if !paths.is_empty() => {
                let mut keys = Vec::new();
                for p in paths {
                    keys.extend(Self::from_file(Path::new(p))?.keys);
                }
                keys.truncate(MAX_KEYS);
                Ok(Self { keys })
            }
            (None, None, Some(data)) => {
                if data.len() > MAX_KEYRING_BYTES.saturating_mul(2) {
                    return Err(KeyringError::TooLarge("keyData".into()));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(KeyringError::Base64)?;
                Self::from_bytes(&bytes, "keyData")
            }
            _ => Err(KeyringError::Source),
        }
    }

    fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| KeyringError::Read(shown.clone(), e))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEYRING_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| KeyringError::Read(shown.clone(), e))?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Fingerprints (uppercase hex) of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{:X}", k.fingerprint()))
            .collect()
    }

    /// Every key that may sign: each primary key, and each subkey whose (verified) binding
    /// grants signing. Paired with the primary key's fingerprint.
    fn signing_keys(&self) -> Vec<(&dyn VerifyingKey, String)> {
        let mut out: Vec<(&dyn VerifyingKey, String)> = Vec::new();
        for k in &self.keys {
            let primary = format!("{:X}", k.fingerprint());
            out.push((k, primary.clone()));
            for sub in &k.public_subkeys {
                if sub.signatures.iter().any(|s| s.key_flags().sign()) {
                    out.push((sub, primary.clone()));
                }
            }
        }
        out
    }
}

/// A signature that verified and whose payload was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signed payload.
    pub payload: SignedPayload,
    /// Fingerprint (uppercase hex) of the primary key that signed (or whose subkey signed).
    pub signer: String,
}

/// Verifies one signature's OpenPGP layer against `keyring` and parses its payload; the
/// payload's claims are not checked here.
pub fn open_signature(
    keyring: &GpgKeyring,
    signature: &[u8],
) -> Result<VerifiedSignature, SignatureFailure> {
    let mut msg =
        Message::from_bytes(signature).map_err(|e| SignatureFailure::Format(Box::new(e)))?;
    if msg.is_compressed() {
        msg = msg
            .decompress()
            .map_err(|e| SignatureFailure::Format(Box::new(e)))?;
    }
    if !msg.is_signed() {
        return Err(SignatureFailure::NotSigned);
    }
    let mut data = Vec::new();
    (&mut msg)
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .map_err(SignatureFailure::Read)?;
    if data.len() > MAX_PAYLOAD_BYTES {
        return Err(SignatureFailure::TooLarge);
    }
    let candidates = keyring.signing_keys();
    let keys: Vec<&dyn VerifyingKey> = candidates.iter().map(|(k, _)| *k).collect();
    let results = msg
        .verify_nested(&keys)
        .map_err(|e| SignatureFailure::Format(Box::new(e)))?;
    let Some((sig, signer)) =
        results
            .into_iter()
            .zip(&candidates)
            .find_map(|(r, (_, fpr))| match r {
                VerificationResult::Valid(sig) => Some((sig, fpr.clone())),
                VerificationResult::Invalid => None,
            })
    else {
        return Err(SignatureFailure::UntrustedOrInvalid(issuers(&msg)));
    };
    match sig.hash_alg() {
        Some(
            HashAlgorithm::Sha256
            | HashAlgorithm::Sha384
            | HashAlgorithm::Sha512
            | HashAlgorithm::Sha224
            | HashAlgorithm::Sha3_256
            | HashAlgorithm::Sha3_512,
        ) => {}
        other => return Err(SignatureFailure::Weak(format!("hash {other:?}"))),
    }
    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        other => return Err(SignatureFailure::Weak(format!("signature type {other:?}"))),
    }
    let payload = SignedPayload::parse(&data, PayloadKind::SimpleSigning)
        .map_err(SignatureFailure::Payload)?;
    Ok(VerifiedSignature { payload, signer })
}

/// The issuer key ids a message's signatures name (for error messages; untrusted).
fn issuers(msg: &Message<'_>) -> String {
    let Message::Signed { reader, .. } = msg else {
        return "none".into();
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        if let Some(sig) = reader.signature(i) {
            ids.extend(
                sig.issuer_key_id()
                    .iter()
                    .map(|k| hex::encode_upper(k.as_ref())),
            );
        }
    }
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(",")
    }
}

/// Accepts the first of `signatures` that verifies with `keyring` and whose payload signs
/// `manifest` with an identity that satisfies `rule` for `pulled`.
pub fn verify_simple_signing(
    keyring: &GpgKeyring,
    signatures: &[Vec<u8>],
    manifest: &Digest,
    rule: &SignedIdentity,
    pulled: &DockerReference,
) -> Result<VerifiedSignature, SimpleSigningError> {
    if signatures.is_empty() {
        return Err(SimpleSigningError::NoSignatures);
    }
    let mut reasons = Vec::new();
    for (i, sig) in signatures.iter().enumerate() {
        let outcome = open_signature(keyring, sig).and_then(|v| {
            v.payload
                .check_claims(manifest, rule, pulled)
                .map(|()| v)
                .map_err(SignatureFailure::Payload)
        });
        match outcome {
            Ok(v) => {
                tracing::info!(
                    image = %pulled,
                    signer = %v.signer,
                    identity = %v.payload.docker_reference,
                    "simple-signing signature accepted"
                );
                return Ok(v);
            }
            Err(why) => {
                tracing::info!(image = %pulled, index = i + 1, reason = %why, "signature skipped");
                if reasons.len() < MAX_REASONS {
                    reasons.push((i + 1, why));
                }
            }
        }
    }
    Err(SimpleSigningError::Rejected {
        total: signatures.len(),
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_sources_are_exclusive_and_bounded() {
        assert!(matches!(
            GpgKeyring::from_requirement(None, None, None),
            Err(KeyringError::Source)
        ));
        assert!(matches!(
            GpgKeyring::from_requirement(Some("/a"), None, Some("eA==")),
            Err(KeyringError::Source)
        ));
        assert!(matches!(
            GpgKeyring::from_requirement(None, Some(&[]), None),
            Err(KeyringError::Source)
        ));
        assert!(matches!(
            GpgKeyring::from_requirement(None, None, Some("not base64!")),
            Err(KeyringError::Base64(_))
        ));
        assert!(matches!(
            GpgKeyring::from_requirement(Some("/nonexistent/keyring.gpg"), None, None),
            Err(KeyringError::Read(..))
        ));
        assert!(matches!(
            GpgKeyring::from_bytes(&vec![0u8; MAX_KEYRING_BYTES + 1], "big"),
            Err(KeyringError::TooLarge(_))
        ));
        assert!(GpgKeyring::from_bytes(b"garbage that is no keyring", "junk").is_err());
    }

    #[test]
    fn garbage_signatures_fail_with_reasons() {
        let reasons = Reasons(&[
            (1, SignatureFailure::NotSigned),
            (2, SignatureFailure::TooLarge),
        ])
        .to_string();
        assert_eq!(
            reasons,
            format!(
                "signature-1: the OpenPGP message is not signed; signature-2: signed data exceeds {MAX_PAYLOAD_BYTES} bytes"
            )
        );
    }
}
