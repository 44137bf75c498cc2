//! cosign / sigstore key files, read and written the way cosign and containers/image do.
//!
//! - Public keys: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), ECDSA P-256 or P-384.
//! - Private keys: PEM `ENCRYPTED COSIGN PRIVATE KEY` (what containers/image 5.23, and so skopeo
//!   1.9, reads) or `ENCRYPTED SIGSTORE PRIVATE KEY` (what newer cosign writes). The PEM body is
//!   the JSON envelope of go-securesystemslib's `encrypted` package: a passphrase stretched by
//!   scrypt (`kdf`: `name`, `params` `{N, r, p}`, `salt`) opens a NaCl secretbox (`cipher`:
//!   `name`, `nonce`) around the key's PKCS#8 DER (`ciphertext`); byte fields are standard
//!   base64, as Go's `encoding/json` writes `[]byte`.
//!
//! Signatures are ASN.1 DER ECDSA over the SHA-256 of the message, whatever the curve (sigstore
//! hard-codes SHA-256 for these signatures).
//!
//! The scrypt parameters come from the key file; only the three sets that go-securesystemslib
//! itself produces and accepts are taken, which bounds the work and memory (128 MiB at most) a
//! crafted key file can demand.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_secretbox::XSalsa20Poly1305;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// PEM type of the private keys cosign wrote first, and the only one containers/image 5.23 reads.
pub(crate) const COSIGN_PRIVATE_KEY_PEM: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// PEM type of the private keys newer cosign writes.
pub(crate) const SIGSTORE_PRIVATE_KEY_PEM: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";

/// Most bytes read from a key file.
pub(crate) const MAX_KEY_FILE: usize = 16 << 10;

const KDF_NAME: &str = "scrypt";
const CIPHER_NAME: &str = "nacl/secretbox";
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// Accepted salt lengths when reading (Go writes 32 bytes; any sane length is fine to read).
const SALT_LEN_RANGE: std::ops::RangeInclusive<usize> = 16..=64;
/// scrypt's `r` and `p` in every set go-securesystemslib uses.
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// Errors from reading, writing or using cosign keys.
#[derive(Debug, thiserror::Error)]
pub enum CosignKeyError {
    /// The key file is larger than [`MAX_KEY_FILE`].
    #[error("key file exceeds {MAX_KEY_FILE} bytes")]
    TooLarge,
    /// The input is not PEM.
    #[error("malformed PEM")]
    Pem(#[source] pem_rfc7468::Error),
    /// The PEM type is not that of an encrypted cosign private key.
    #[error(
        "unsupported PEM type {0:?} (expected {COSIGN_PRIVATE_KEY_PEM} or {SIGSTORE_PRIVATE_KEY_PEM})"
    )]
    PemType(String),
    /// The encrypted envelope does not parse.
    #[error("malformed encrypted private key envelope")]
    Envelope(#[source] serde_json::Error),
    /// A base64 field of the envelope does not decode.
    #[error("malformed base64 in encrypted private key field {0}")]
    Base64(&'static str, #[source] base64::DecodeError),
    /// The key derivation function is not scrypt.
    #[error("unsupported key derivation function {0:?}")]
    Kdf(String),
    /// The scrypt parameters are not one of the accepted sets.
    #[error("unsupported scrypt parameters N={n} r={r} p={p}")]
    KdfParams {
        /// Cost.
        n: u64,
        /// Block size.
        r: u64,
        /// Parallelism.
        p: u64,
    },
    /// The cipher is not NaCl secretbox.
    #[error("unsupported cipher {0:?}")]
    Cipher(String),
    /// The salt or nonce has the wrong length.
    #[error("encrypted private key field {field} has {len} bytes")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The secretbox does not open: wrong passphrase, or the file was altered.
    #[error("cannot decrypt the private key (wrong passphrase or corrupted key file)")]
    Decrypt,
    /// The decrypted key is not a PKCS#8 ECDSA P-256 or P-384 key.
    #[error("private key is not a PKCS#8 ECDSA P-256 or P-384 key")]
    PrivateKey,
    /// The PEM holds no ECDSA P-256 or P-384 public key.
    #[error("no ECDSA P-256 or P-384 public key (PEM PUBLIC KEY) found")]
    PublicKey,
    /// Encoding a key failed.
    #[error("cannot encode the key")]
    Encode,
    /// A signature is not DER ECDSA, or does not verify with this key.
    #[error("signature does not verify with the public key")]
    BadSignature,
}

/// How much work scrypt does for a newly encrypted private key: one of the sets
/// go-securesystemslib knows. Only [`KdfStrength::Legacy`] is read by every implementation:
/// go-tuf's `encrypted` package (used by containers/image 5.23, skopeo 1.9, podman 4) accepts
/// N = 2^15 and nothing else; current cosign accepts all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KdfStrength {
    /// N = 2^15 (32 MiB): readable everywhere.
    #[default]
    Legacy,
    /// N = 2^16 (64 MiB): what current cosign writes.
    Standard,
    /// N = 2^17 (128 MiB).
    Owasp,
}

impl KdfStrength {
    fn log_n(self) -> u8 {
        match self {
            Self::Legacy => 15,
            Self::Standard => 16,
            Self::Owasp => 17,
        }
    }
}

/// log2(N) of the scrypt sets accepted when reading: go-securesystemslib's three.
const ACCEPTED_LOG_N: [u8; 3] = [15, 16, 17];

/// The JSON envelope inside an encrypted private key PEM.
#[derive(Serialize, Deserialize)]
struct Envelope {
    kdf: KdfSection,
    cipher: CipherSection,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct KdfSection {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u64,
    p: u64,
}

#[derive(Serialize, Deserialize)]
struct CipherSection {
    name: String,
    nonce: String,
}

/// A public key that verifies cosign signatures.
#[derive(Clone, PartialEq, Eq)]
pub enum CosignPublicKey {
    /// ECDSA P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384.
    P384(p384::ecdsa::VerifyingKey),
}

impl fmt::Debug for CosignPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (curve, point) = match self {
            Self::P256(k) => ("P-256", k.to_encoded_point(true).as_bytes().to_vec()),
            Self::P384(k) => ("P-384", k.to_encoded_point(true).as_bytes().to_vec()),
        };
        write!(f, "CosignPublicKey({curve}, {})", hex::encode(point))
    }
}

impl CosignPublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an ECDSA P-256 or P-384 key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CosignKeyError> {
        if pem.len() > MAX_KEY_FILE {
            return Err(CosignKeyError::TooLarge);
        }
        let text = std::str::from_utf8(pem).map_err(|_| CosignKeyError::PublicKey)?;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(Self::P384(k));
        }
        Err(CosignKeyError::PublicKey)
    }

    /// The key as PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> Result<String, CosignKeyError> {
        match self {
            Self::P256(k) => k.to_public_key_pem(LineEnding::LF),
            Self::P384(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .map_err(|_| CosignKeyError::Encode)
    }

    /// Checks a DER ECDSA `signature` over the SHA-256 of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CosignKeyError> {
        let digest = Sha256::digest(message);
        let ok = match self {
            Self::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .and_then(|s| k.verify_prehash(&digest, &s)),
            Self::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .and_then(|s| k.verify_prehash(&digest, &s)),
        };
        ok.map_err(|_| CosignKeyError::BadSignature)
    }
}

/// A private key that makes cosign signatures. Debug output never shows the key.
#[derive(Clone)]
pub enum CosignPrivateKey {
    /// ECDSA P-256 (what cosign generates).
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-384.
    P384(p384::ecdsa::SigningKey),
}

impl fmt::Debug for CosignPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignPrivateKey({:?})", self.public_key())
    }
}

impl CosignPrivateKey {
    /// A fresh ECDSA P-256 key.
    pub fn generate() -> Self {
        Self::P256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// The matching public key.
    pub fn public_key(&self) -> CosignPublicKey {
        match self {
            Self::P256(k) => CosignPublicKey::P256(*k.verifying_key()),
            Self::P384(k) => CosignPublicKey::P384(*k.verifying_key()),
        }
    }

    /// A DER ECDSA signature over the SHA-256 of `message` (RFC 6979 nonces).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CosignKeyError> {
        let digest = Sha256::digest(message);
        match self {
            Self::P256(k) => PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(k, &digest)
                .map(|s| s.to_der().as_bytes().to_vec()),
            Self::P384(k) => PrehashSigner::<p384::ecdsa::Signature>::sign_prehash(k, &digest)
                .map(|s| s.to_der().as_bytes().to_vec()),
        }
        .map_err(|_| CosignKeyError::Encode)
    }

    /// Reads an encrypted private key PEM (either PEM type) with `passphrase`.
    pub fn from_encrypted_pem(pem: &[u8], passphrase: &[u8]) -> Result<Self, CosignKeyError> {
        Self::decode_encrypted(pem, passphrase, &ACCEPTED_LOG_N)
    }

    fn decode_encrypted(
        pem: &[u8],
        passphrase: &[u8],
        accepted_log_n: &[u8],
    ) -> Result<Self, CosignKeyError> {
        if pem.len() > MAX_KEY_FILE {
            return Err(CosignKeyError::TooLarge);
        }
        let (label, body) = pem_rfc7468::decode_vec(pem).map_err(CosignKeyError::Pem)?;
        if label != COSIGN_PRIVATE_KEY_PEM && label != SIGSTORE_PRIVATE_KEY_PEM {
            return Err(CosignKeyError::PemType(label.chars().take(64).collect()));
        }
        let der = open_envelope(&body, passphrase, accepted_log_n)?;
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(&der) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(&der) {
            return Ok(Self::P384(k));
        }
        Err(CosignKeyError::PrivateKey)
    }

    /// Writes the key as PEM `ENCRYPTED COSIGN PRIVATE KEY` (readable by every cosign and
    /// containers/image version), encrypted with `passphrase` (may be empty).
    pub fn to_encrypted_pem(
        &self,
        passphrase: &[u8],
        strength: KdfStrength,
    ) -> Result<Zeroizing<String>, CosignKeyError> {
        self.encode_encrypted(passphrase, strength.log_n())
    }

    fn encode_encrypted(
        &self,
        passphrase: &[u8],
        log_n: u8,
    ) -> Result<Zeroizing<String>, CosignKeyError> {
        let der = match self {
            Self::P256(k) => k.to_pkcs8_der(),
            Self::P384(k) => k.to_pkcs8_der(),
        }
        .map_err(|_| CosignKeyError::Encode)?;
        let body = seal_envelope(der.as_bytes(), passphrase, log_n)?;
        pem_rfc7468::encode_string(COSIGN_PRIVATE_KEY_PEM, LineEnding::LF, &body)
            .map(Zeroizing::new)
            .map_err(|_| CosignKeyError::Encode)
    }
}

fn derive_key(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
) -> Result<Zeroizing<[u8; 32]>, CosignKeyError> {
    let params =
        scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P, 32).map_err(|_| CosignKeyError::Encode)?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, salt, &params, key.as_mut_slice())
        .map_err(|_| CosignKeyError::Encode)?;
    Ok(key)
}

/// Encrypts `plaintext` into the JSON envelope with scrypt cost N = 2^`log_n`.
fn seal_envelope(
    plaintext: &[u8],
    passphrase: &[u8],
    log_n: u8,
) -> Result<Vec<u8>, CosignKeyError> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, log_n)?;
    let ciphertext = XSalsa20Poly1305::new(key.as_ref().into())
        .encrypt(&nonce.into(), plaintext)
        .map_err(|_| CosignKeyError::Encode)?;
    let envelope = Envelope {
        kdf: KdfSection {
            name: KDF_NAME.into(),
            params: ScryptParams {
                n: 1u64 << log_n,
                r: SCRYPT_R.into(),
                p: SCRYPT_P.into(),
            },
            salt: BASE64.encode(salt),
        },
        cipher: CipherSection {
            name: CIPHER_NAME.into(),
            nonce: BASE64.encode(nonce),
        },
        ciphertext: BASE64.encode(ciphertext),
    };
    serde_json::to_vec(&envelope).map_err(CosignKeyError::Envelope)
}

/// Opens the JSON envelope, taking only scrypt sets with r = 8, p = 1 and log2(N) in
/// `accepted_log_n` (checked before any scrypt work).
fn open_envelope(
    body: &[u8],
    passphrase: &[u8],
    accepted_log_n: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CosignKeyError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(CosignKeyError::Envelope)?;
    if envelope.kdf.name != KDF_NAME {
        return Err(CosignKeyError::Kdf(
            envelope.kdf.name.chars().take(64).collect(),
        ));
    }
    if envelope.cipher.name != CIPHER_NAME {
        return Err(CosignKeyError::Cipher(
            envelope.cipher.name.chars().take(64).collect(),
        ));
    }
    let ScryptParams { n, r, p } = envelope.kdf.params;
    let log_n = accepted_log_n
        .iter()
        .copied()
        .find(|l| 1u64 << l == n)
        .filter(|_| r == u64::from(SCRYPT_R) && p == u64::from(SCRYPT_P))
        .ok_or(CosignKeyError::KdfParams { n, r, p })?;
    let salt = BASE64
        .decode(&envelope.kdf.salt)
        .map_err(|e| CosignKeyError::Base64("kdf.salt", e))?;
    if !SALT_LEN_RANGE.contains(&salt.len()) {
        return Err(CosignKeyError::FieldLength {
            field: "kdf.salt",
            len: salt.len(),
        });
    }
    let nonce = BASE64
        .decode(&envelope.cipher.nonce)
        .map_err(|e| CosignKeyError::Base64("cipher.nonce", e))?;
    let nonce: [u8; NONCE_LEN] =
        nonce
            .as_slice()
            .try_into()
            .map_err(|_| CosignKeyError::FieldLength {
                field: "cipher.nonce",
                len: nonce.len(),
            })?;
    let ciphertext = BASE64
        .decode(&envelope.ciphertext)
        .map_err(|e| CosignKeyError::Base64("ciphertext", e))?;
    let key = derive_key(passphrase, &salt, log_n)?;
    XSalsa20Poly1305::new(key.as_ref().into())
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| CosignKeyError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit tests use scrypt N = 2^10, handed to the reader explicitly: the real sets take
    /// seconds each in debug builds. The integration tests (`tests/sigstore_*.rs`) use the real
    /// sets, read and written by skopeo.
    const TEST_LOG_N: u8 = 10;

    fn seal(key: &CosignPrivateKey, pass: &[u8]) -> Zeroizing<String> {
        key.encode_encrypted(pass, TEST_LOG_N).unwrap()
    }

    fn open(pem: &[u8], pass: &[u8]) -> Result<CosignPrivateKey, CosignKeyError> {
        CosignPrivateKey::decode_encrypted(pem, pass, &[TEST_LOG_N])
    }

    fn pem_of(label: &str, body: &[u8]) -> String {
        pem_rfc7468::encode_string(label, LineEnding::LF, body).unwrap()
    }

    fn envelope_of(pem: &str) -> serde_json::Value {
        let (_, body) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn private_key_round_trips_and_signs_verifiably() {
        let key = CosignPrivateKey::generate();
        let pem = seal(&key, b"pw");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n"));
        let env = envelope_of(&pem);
        assert_eq!(env["kdf"]["name"], "scrypt");
        assert_eq!(env["kdf"]["params"]["N"], 1024);
        assert_eq!(env["kdf"]["params"]["r"], 8);
        assert_eq!(env["kdf"]["params"]["p"], 1);
        assert_eq!(env["cipher"]["name"], "nacl/secretbox");
        let field_len = |v: &serde_json::Value| BASE64.decode(v.as_str().unwrap()).unwrap().len();
        assert_eq!(field_len(&env["kdf"]["salt"]), 32);
        assert_eq!(field_len(&env["cipher"]["nonce"]), 24);

        let back = open(pem.as_bytes(), b"pw").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let sig = back.sign(b"payload").unwrap();
        key.public_key().verify(b"payload", &sig).unwrap();
        assert!(matches!(
            key.public_key().verify(b"payloaD", &sig),
            Err(CosignKeyError::BadSignature)
        ));
        // A different key's public half refuses it.
        let other = CosignPrivateKey::generate().public_key();
        assert!(other.verify(b"payload", &sig).is_err());
        // Debug never prints the private scalar.
        let CosignPrivateKey::P256(sk) = &key else {
            panic!("generate makes P-256")
        };
        let scalar = hex::encode(sk.to_bytes());
        assert!(!format!("{key:?}").contains(&scalar));
    }

    #[test]
    fn only_the_three_securesystemslib_cost_sets_are_read_or_written() {
        for (s, n) in [
            (KdfStrength::Legacy, 32768u64),
            (KdfStrength::Standard, 65536),
            (KdfStrength::Owasp, 131_072),
        ] {
            assert_eq!(1u64 << s.log_n(), n);
            assert!(ACCEPTED_LOG_N.contains(&s.log_n()));
        }
        assert_eq!(KdfStrength::default(), KdfStrength::Legacy);
        // The public reader refuses the cheap test set before doing any scrypt work.
        let pem = seal(&CosignPrivateKey::generate(), b"");
        assert!(matches!(
            CosignPrivateKey::from_encrypted_pem(pem.as_bytes(), b""),
            Err(CosignKeyError::KdfParams {
                n: 1024,
                r: 8,
                p: 1
            })
        ));
    }

    #[test]
    fn the_sigstore_pem_type_is_read_too() {
        let key = CosignPrivateKey::generate();
        let pem = seal(&key, b"");
        let (_, body) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
        let sigstore = pem_of(SIGSTORE_PRIVATE_KEY_PEM, &body);
        let back = open(sigstore.as_bytes(), b"").unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let plain = pem_of("PRIVATE KEY", &body);
        assert!(matches!(
            open(plain.as_bytes(), b""),
            Err(CosignKeyError::PemType(t)) if t == "PRIVATE KEY"
        ));
    }

    #[test]
    fn wrong_passphrase_and_tampering_are_refused() {
        let key = CosignPrivateKey::generate();
        let pem = seal(&key, b"right");
        assert!(matches!(
            open(pem.as_bytes(), b"wrong"),
            Err(CosignKeyError::Decrypt)
        ));
        assert!(matches!(
            open(pem.as_bytes(), b""),
            Err(CosignKeyError::Decrypt)
        ));
        // Flip one ciphertext bit, or change the salt: the secretbox tag catches it.
        let env = envelope_of(&pem);
        for field in [&["ciphertext"][..], &["kdf", "salt"]] {
            let mut e = env.clone();
            let mut slot = &mut e;
            for f in field {
                slot = &mut slot[*f];
            }
            let mut raw = BASE64.decode(slot.as_str().unwrap()).unwrap();
            raw[5] ^= 1;
            *slot = BASE64.encode(&raw).into();
            let tampered = pem_of(COSIGN_PRIVATE_KEY_PEM, e.to_string().as_bytes());
            assert!(
                matches!(
                    open(tampered.as_bytes(), b"right"),
                    Err(CosignKeyError::Decrypt)
                ),
                "{field:?}"
            );
        }
    }

    #[test]
    fn crafted_envelopes_are_refused_before_any_expensive_work() {
        let pem = seal(&CosignPrivateKey::generate(), b"");
        let env = envelope_of(&pem);
        let with = |path: &[&str], value: serde_json::Value| {
            let mut e = env.clone();
            let mut slot = &mut e;
            for p in path {
                slot = &mut slot[*p];
            }
            *slot = value;
            pem_of(COSIGN_PRIVATE_KEY_PEM, e.to_string().as_bytes())
        };
        // A huge N (or r, p) would take minutes and gigabytes: refused outright.
        for (field, v) in [("N", 1u64 << 30), ("r", 64), ("p", 16), ("N", 1000)] {
            assert!(
                matches!(
                    open(with(&["kdf", "params", field], v.into()).as_bytes(), b""),
                    Err(CosignKeyError::KdfParams { .. })
                ),
                "{field}={v}"
            );
        }
        assert!(matches!(
            open(with(&["kdf", "params", "N"], (-1).into()).as_bytes(), b""),
            Err(CosignKeyError::Envelope(_))
        ));
        assert!(matches!(
            open(with(&["kdf", "name"], "pbkdf2".into()).as_bytes(), b""),
            Err(CosignKeyError::Kdf(_))
        ));
        assert!(matches!(
            open(with(&["cipher", "name"], "aes-gcm".into()).as_bytes(), b""),
            Err(CosignKeyError::Cipher(_))
        ));
        assert!(matches!(
            open(
                with(&["cipher", "nonce"], BASE64.encode([0u8; 12]).into()).as_bytes(),
                b""
            ),
            Err(CosignKeyError::FieldLength {
                field: "cipher.nonce",
                len: 12
            })
        ));
        assert!(matches!(
            open(
                with(&["kdf", "salt"], BASE64.encode([0u8; 4]).into()).as_bytes(),
                b""
            ),
            Err(CosignKeyError::FieldLength {
                field: "kdf.salt",
                len: 4
            })
        ));
        assert!(matches!(
            open(with(&["ciphertext"], "not base64!".into()).as_bytes(), b""),
            Err(CosignKeyError::Base64("ciphertext", _))
        ));
        assert!(matches!(
            open(
                pem_of(COSIGN_PRIVATE_KEY_PEM, b"{\"kdf\":1}").as_bytes(),
                b""
            ),
            Err(CosignKeyError::Envelope(_))
        ));
        assert!(matches!(
            open(b"not pem at all", b""),
            Err(CosignKeyError::Pem(_))
        ));
        let huge = vec![b'A'; MAX_KEY_FILE + 1];
        assert!(matches!(open(&huge, b""), Err(CosignKeyError::TooLarge)));
    }

    #[test]
    fn a_secretbox_holding_something_else_than_pkcs8_is_refused() {
        let body = seal_envelope(b"not a key", b"", TEST_LOG_N).unwrap();
        let pem = pem_of(SIGSTORE_PRIVATE_KEY_PEM, &body);
        assert!(matches!(
            open(pem.as_bytes(), b""),
            Err(CosignKeyError::PrivateKey)
        ));
    }

    #[test]
    fn public_keys_parse_p256_and_p384_and_refuse_others() {
        let k256 = CosignPrivateKey::generate().public_key();
        let pem = k256.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(CosignPublicKey::from_pem(pem.as_bytes()).unwrap(), k256);

        let sk384 = p384::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let key384 = CosignPrivateKey::P384(sk384);
        let pub384 =
            CosignPublicKey::from_pem(key384.public_key().to_pem().unwrap().as_bytes()).unwrap();
        assert!(matches!(pub384, CosignPublicKey::P384(_)));
        let sig = key384.sign(b"m").unwrap();
        pub384.verify(b"m", &sig).unwrap();
        assert!(k256.verify(b"m", &sig).is_err());
        // The P-384 key survives the encrypted round trip too.
        let back = open(seal(&key384, b"x").as_bytes(), b"x").unwrap();
        assert_eq!(back.public_key(), pub384);

        let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let rsa_pem =
            rsa::pkcs8::EncodePublicKey::to_public_key_pem(&rsa.to_public_key(), LineEnding::LF)
                .unwrap();
        assert!(matches!(
            CosignPublicKey::from_pem(rsa_pem.as_bytes()),
            Err(CosignKeyError::PublicKey)
        ));
        assert!(matches!(
            CosignPublicKey::from_pem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            ),
            Err(CosignKeyError::PublicKey)
        ));
        assert!(matches!(
            CosignPublicKey::from_pem(&vec![b'A'; MAX_KEY_FILE + 1]),
            Err(CosignKeyError::TooLarge)
        ));
        // Garbage signatures are refused, not panicked on.
        assert!(k256.verify(b"m", b"").is_err());
        assert!(k256.verify(b"m", &[0x30, 0x02, 0x02, 0x00]).is_err());
    }
}
