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
use pgp::packet::{Signature, SignatureType};
use pgp::types::{KeyDetails, Timestamp, VerifyingKey};

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
            let fpr = format!("{:X}", key.fingerprint());
            if let Err(e) = key.verify_bindings() {
                tracing::warn!(keyring = what, key = %fpr, error = %e,
                    "skipping a key whose self-signatures do not verify");
                continue;
            }
            match unusable(&key, unix_now()) {
                Some(why) => {
                    tracing::warn!(keyring = what, key = %fpr, why, "skipping an unusable key");
                }
                None => keys.push(key),
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
    /// grants signing and which is neither revoked nor expired. Paired with the primary key's
    /// fingerprint.
    fn signing_keys(&self) -> Vec<(&dyn VerifyingKey, String)> {
        let now = unix_now();
        let mut out: Vec<(&dyn VerifyingKey, String)> = Vec::new();
        for k in &self.keys {
            let primary = format!("{:X}", k.fingerprint());
            out.push((k, primary.clone()));
            for sub in &k.public_subkeys {
                let revoked = sub
                    .signatures
                    .iter()
                    .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation));
                let binding = newest(
                    sub.signatures
                        .iter()
                        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding)),
                );
                let signs = binding.is_some_and(|b| b.key_flags().sign());
                let expired = binding.is_some_and(|b| expired(sub.created_at(), b, now));
                if signs && !revoked && !expired {
                    out.push((sub, primary.clone()));
                }
            }
        }
        out
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The most recent of `sigs` (by creation time).
fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map_or(0, |t| t.as_secs()))
}

/// Whether the key created at `created` has expired by `now` according to `self_sig`.
fn expired(created: Timestamp, self_sig: &Signature, now: u64) -> bool {
    match self_sig.key_expiration_time().map(|d| d.as_secs()) {
        None | Some(0) => false,
        Some(secs) => u64::from(created.as_secs()) + u64::from(secs) <= now,
    }
}

/// Why a primary key may not be used (revoked, or expired per its newest self-signature).
fn unusable(key: &SignedPublicKey, now: u64) -> Option<&'static str> {
    if !key.details.revocation_signatures.is_empty() {
        return Some("revoked");
    }
    let self_sig = newest(
        key.details
            .direct_signatures
            .iter()
            .chain(key.details.users.iter().flat_map(|u| u.signatures.iter())),
    );
    if self_sig.is_some_and(|s| expired(key.created_at(), s, now)) {
        return Some("expired");
    }
    None
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
    if !strong_hash(sig.hash_alg()) {
        return Err(SignatureFailure::Weak(format!("hash {:?}", sig.hash_alg())));
    }
    match sig.typ() {
        Some(SignatureType::Binary | SignatureType::Text) => {}
        other => return Err(SignatureFailure::Weak(format!("signature type {other:?}"))),
    }
    let payload = SignedPayload::parse(&data, PayloadKind::SimpleSigning)
        .map_err(SignatureFailure::Payload)?;
    Ok(VerifiedSignature { payload, signer })
}

/// SHA-2 or SHA-3: no MD5, SHA-1 or RIPEMD-160 signatures.
fn strong_hash(alg: Option<HashAlgorithm>) -> bool {
    matches!(
        alg,
        Some(
            HashAlgorithm::Sha256
                | HashAlgorithm::Sha384
                | HashAlgorithm::Sha512
                | HashAlgorithm::Sha224
                | HashAlgorithm::Sha3_256
                | HashAlgorithm::Sha3_512
        )
    )
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
    use pgp::composed::{
        EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SignedSecretKey,
        SubkeyParamsBuilder,
    };
    use pgp::ser::Serialize as _;
    use pgp::types::{CompressionAlgorithm, Password, SigningKey};

    use super::*;

    /// A fresh Ed25519 key; with `sign_subkey`, signing is done by a subkey (the primary only
    /// certifies).
    fn secret_key(uid: &str, sign_subkey: bool) -> SignedSecretKey {
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(!sign_subkey)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(uid.into());
        if sign_subkey {
            let mut sub = SubkeyParamsBuilder::default();
            sub.key_type(KeyType::Ed25519Legacy)
                .can_sign(true)
                .can_encrypt(EncryptionCaps::None);
            params.subkeys(vec![sub.build().unwrap()]);
        }
        params
            .build()
            .unwrap()
            .generate(rand::thread_rng())
            .unwrap()
    }

    fn keyring(keys: &[&SignedSecretKey]) -> GpgKeyring {
        let mut bytes = Vec::new();
        for k in keys {
            SignedPublicKey::from((*k).clone())
                .to_writer(&mut bytes)
                .unwrap();
        }
        GpgKeyring::from_bytes(&bytes, "test").unwrap()
    }

    fn sign(
        data: &[u8],
        key: &dyn SigningKey,
        hash: HashAlgorithm,
        compression: Option<CompressionAlgorithm>,
    ) -> Vec<u8> {
        let mut b = MessageBuilder::from_bytes("", data.to_vec());
        if let Some(c) = compression {
            b.compression(c);
        }
        b.sign(key, Password::empty(), hash);
        b.to_vec(rand::thread_rng()).unwrap()
    }

    fn manifest() -> Digest {
        Digest::of(b"manifest")
    }

    fn payload(reference: &str) -> Vec<u8> {
        SignedPayload::new(PayloadKind::SimpleSigning, reference, manifest()).to_json()
    }

    fn pulled() -> DockerReference {
        DockerReference::parse_pulled("reg.io/team/app:v1").unwrap()
    }

    fn verify(
        ring: &GpgKeyring,
        sigs: &[Vec<u8>],
    ) -> Result<VerifiedSignature, SimpleSigningError> {
        verify_simple_signing(
            ring,
            sigs,
            &manifest(),
            &SignedIdentity::default(),
            &pulled(),
        )
    }

    fn only_reason(r: Result<VerifiedSignature, SimpleSigningError>) -> SignatureFailure {
        match r {
            Err(SimpleSigningError::Rejected {
                total: 1,
                mut reasons,
            }) if reasons.len() == 1 => reasons.remove(0).1,
            other => panic!("expected one rejection, got {other:?}"),
        }
    }

    #[test]
    fn signatures_by_trusted_keys_verify_compressed_or_not() {
        let key = secret_key("signer", false);
        let ring = keyring(&[&key]);
        let fpr = format!("{:X}", key.fingerprint());
        assert_eq!(ring.fingerprints(), vec![fpr.clone()]);
        for compression in [
            None,
            Some(CompressionAlgorithm::ZIP),
            Some(CompressionAlgorithm::ZLIB),
        ] {
            let sig = sign(
                &payload("reg.io/team/app:v1"),
                &key.primary_key,
                HashAlgorithm::Sha256,
                compression,
            );
            let v = verify(&ring, &[sig]).unwrap();
            assert_eq!(v.signer, fpr);
            assert_eq!(v.payload.docker_reference, "reg.io/team/app:v1");
        }
        // The armored form of the same keyring works too.
        let armored = SignedPublicKey::from(key.clone())
            .to_armored_bytes(Default::default())
            .unwrap();
        let ring2 = GpgKeyring::from_bytes(&armored, "armored").unwrap();
        assert_eq!(ring2.fingerprints(), vec![fpr]);
    }

    #[test]
    fn signing_subkeys_count_for_their_primary_key() {
        let key = secret_key("subkey signer", true);
        let ring = keyring(&[&key]);
        let sub = &key.secret_subkeys[0].key;
        let sig = sign(
            &payload("reg.io/team/app:v1"),
            sub,
            HashAlgorithm::Sha512,
            None,
        );
        let v = verify(&ring, &[sig]).unwrap();
        assert_eq!(v.signer, format!("{:X}", key.fingerprint()));
    }

    #[test]
    fn untrusted_tampered_weak_and_unsigned_messages_are_refused() {
        let key = secret_key("signer", false);
        let stranger = secret_key("stranger", false);
        let ring = keyring(&[&key]);
        let data = payload("reg.io/team/app:v1");
        // Another key.
        let by_stranger = sign(&data, &stranger.primary_key, HashAlgorithm::Sha256, None);
        assert!(matches!(
            only_reason(verify(&ring, std::slice::from_ref(&by_stranger))),
            SignatureFailure::UntrustedOrInvalid(_)
        ));
        assert!(verify(&keyring(&[&key, &stranger]), &[by_stranger]).is_ok());
        // Tampered literal data (uncompressed, so the payload bytes are visible).
        let good = sign(&data, &key.primary_key, HashAlgorithm::Sha256, None);
        let at = good.windows(6).position(|w| w == b"reg.io").unwrap();
        let mut tampered = good.clone();
        tampered[at] = b'R';
        assert!(matches!(
            only_reason(verify(&ring, &[tampered])),
            SignatureFailure::UntrustedOrInvalid(_)
        ));
        // Hashes: SHA-2 and SHA-3 only (rpgp will not even make a weak Ed25519 signature).
        for weak in [
            HashAlgorithm::Sha1,
            HashAlgorithm::Md5,
            HashAlgorithm::Ripemd160,
        ] {
            assert!(!strong_hash(Some(weak)), "{weak:?}");
        }
        assert!(!strong_hash(None));
        assert!(strong_hash(Some(HashAlgorithm::Sha256)));
        // A literal message without a signature.
        let unsigned = MessageBuilder::from_bytes("", data.clone())
            .to_vec(rand::thread_rng())
            .unwrap();
        assert!(matches!(
            only_reason(verify(&ring, &[unsigned])),
            SignatureFailure::NotSigned
        ));
        // Not OpenPGP at all, truncated.
        assert!(matches!(
            only_reason(verify(&ring, &[b"not openpgp".to_vec()])),
            SignatureFailure::Format(_) | SignatureFailure::Read(_)
        ));
        assert!(verify(&ring, &[good[..good.len() / 2].to_vec()]).is_err());
        // Signed data larger than a payload may be.
        let big = sign(
            &vec![b' '; MAX_PAYLOAD_BYTES + 1],
            &key.primary_key,
            HashAlgorithm::Sha256,
            Some(CompressionAlgorithm::ZLIB),
        );
        assert!(matches!(
            only_reason(verify(&ring, &[big])),
            SignatureFailure::TooLarge
        ));
        // Valid signatures over a cosign payload, another manifest or another identity.
        let cosign = SignedPayload::new(PayloadKind::Cosign, "reg.io/team/app:v1", manifest());
        for (payload, what) in [
            (cosign.to_json(), "type"),
            (
                SignedPayload::new(
                    PayloadKind::SimpleSigning,
                    "reg.io/team/app:v1",
                    Digest::of(b"x"),
                )
                .to_json(),
                "digest",
            ),
            (payload("reg.io/team/app:v2"), "identity"),
        ] {
            let sig = sign(&payload, &key.primary_key, HashAlgorithm::Sha256, None);
            let why = only_reason(verify(&ring, &[sig]));
            let ok = matches!(
                (&why, what),
                (
                    SignatureFailure::Payload(PayloadError::WrongType { .. }),
                    "type"
                ) | (
                    SignatureFailure::Payload(PayloadError::DigestMismatch { .. }),
                    "digest"
                ) | (
                    SignatureFailure::Payload(PayloadError::Identity(_)),
                    "identity"
                )
            );
            assert!(ok, "{what}: {why:?}");
        }
    }

    #[test]
    fn truncated_or_bit_flipped_signatures_never_yield_a_forged_payload() {
        let key = secret_key("signer", false);
        let ring = keyring(&[&key]);
        let data = payload("reg.io/team/app:v1");
        let good = sign(
            &data,
            &key.primary_key,
            HashAlgorithm::Sha256,
            Some(CompressionAlgorithm::ZLIB),
        );
        let want = SignedPayload::parse(&data, PayloadKind::SimpleSigning).unwrap();
        for len in 0..good.len() {
            assert!(open_signature(&ring, &good[..len]).is_err(), "prefix {len}");
        }
        // A flipped bit may land where OpenPGP does not protect (the unhashed subpackets),
        // so acceptance is possible; but what is accepted is always the signed payload.
        let mut refused = 0;
        for pos in 0..good.len() {
            let mut bad = good.clone();
            bad[pos] ^= 0x01;
            match open_signature(&ring, &bad) {
                Ok(v) => assert_eq!(v.payload, want, "flip at {pos}"),
                Err(_) => refused += 1,
            }
        }
        assert!(refused > good.len() / 2, "{refused} of {}", good.len());
    }

    #[test]
    fn one_good_signature_among_bad_ones_is_enough_and_reasons_are_bounded() {
        let key = secret_key("signer", false);
        let ring = keyring(&[&key]);
        let good = sign(
            &payload("reg.io/team/app:v1"),
            &key.primary_key,
            HashAlgorithm::Sha256,
            None,
        );
        let mut sigs = vec![b"junk".to_vec(); 10];
        assert!(matches!(
            verify(&ring, &[]),
            Err(SimpleSigningError::NoSignatures)
        ));
        match verify(&ring, &sigs) {
            Err(SimpleSigningError::Rejected { total: 10, reasons }) => {
                assert_eq!(reasons.len(), MAX_REASONS);
                assert_eq!(reasons[0].0, 1);
            }
            other => panic!("{other:?}"),
        }
        sigs.push(good);
        assert!(verify(&ring, &sigs).is_ok());
    }

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
