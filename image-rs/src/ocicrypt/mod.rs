//! ocicrypt: encrypted layers as containers/ocicrypt (and so skopeo) write and read them.
//!
//! An encrypted layer has a media type ending in `+encrypted` and two kinds of annotations:
//! - `org.opencontainers.image.enc.keys.<scheme>`: base64 of the wrapped *private options*
//!   (JSON: `symkey`, `digest`, `cipheroptions.nonce`), comma-separated when several wraps
//!   exist. Schemes handled here: `jwe` and `provider.attestation-agent`.
//! - `org.opencontainers.image.enc.pubopts`: base64 of the *public options* (JSON: `cipher`,
//!   `hmac`, `cipheroptions`).
//!
//! [`unwrap_layer_key`] turns annotations plus keys into a [`LayerKey`]; [`LayerKey::open`]
//! checks the HMAC before releasing plaintext; [`encrypt_layer`] is the owner's side.

mod cipher;
mod provider;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::digest::Digest;

pub use cipher::{CIPHER_AES_256_CTR_HMAC_SHA256, CipherError, LayerKey, Plaintext};
// The JWE and its keys are the project's one JOSE implementation, shared with the KBS client
// and the broker.
pub use provider::{
    KeyFuture, KeyId, KeyProvider, KeyProviderError, ProviderError, StaticKeyProvider,
};
use tsuba_protocols::jose as jwe;
pub use tsuba_protocols::jose::{JweError, KeyError, PrivateKey, PublicKey};

/// Annotation with JWE-wrapped private options.
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// Annotation with key-provider-wrapped private options (Confidential Containers).
pub const ANNOTATION_PROVIDER_AA: &str =
    "org.opencontainers.image.enc.keys.provider.attestation-agent";
/// Annotation with the public options.
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Prefix of every ocicrypt annotation.
pub const ANNOTATION_PREFIX: &str = "org.opencontainers.image.enc.";
const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// Longest ocicrypt annotation value accepted (base64), bounding parse work on host input.
const MAX_ANNOTATION_LEN: usize = 1 << 20;

/// Whether a layer media type is an encrypted one.
pub fn is_encrypted(media_type: &str) -> bool {
    media_type.ends_with(ENCRYPTED_SUFFIX)
}

/// The media type of the decrypted layer.
pub fn decrypted_media_type(media_type: &str) -> &str {
    media_type
        .strip_suffix(ENCRYPTED_SUFFIX)
        .unwrap_or(media_type)
}

/// The media type of the encrypted layer.
pub fn encrypted_media_type(media_type: &str) -> String {
    if is_encrypted(media_type) {
        media_type.to_owned()
    } else {
        format!("{media_type}{ENCRYPTED_SUFFIX}")
    }
}

/// Errors from ocicrypt key handling.
#[derive(Debug, thiserror::Error)]
pub enum OcicryptError {
    /// No annotation names a way to unwrap the layer key.
    #[error("encrypted layer has no wrapped-key annotation this runtime handles")]
    NoWrappedKeys,
    /// An annotation value is too long.
    #[error("annotation {0} exceeds {MAX_ANNOTATION_LEN} bytes")]
    AnnotationTooLarge(&'static str),
    /// An annotation value is not valid base64.
    #[error("annotation {0} is not valid base64")]
    Base64(&'static str),
    /// The options JSON is malformed.
    #[error("malformed {0} options")]
    Options(&'static str, #[source] serde_json::Error),
    /// The public options name a cipher other than `AES_256_CTR_HMAC_SHA256`.
    #[error("unsupported layer cipher {0:?}")]
    UnsupportedCipher(String),
    /// No HMAC is recorded for the layer.
    #[error("encrypted layer has no hmac")]
    MissingHmac,
    /// No nonce is recorded for the layer.
    #[error("encrypted layer has no nonce")]
    MissingNonce,
    /// Every way to unwrap the key failed; each failure is listed.
    #[error("could not unwrap the layer key: {}", failures(.0))]
    Unwrap(Vec<UnwrapFailure>),
    /// The cipher parameters are invalid.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// Key wrapping failed while encrypting.
    #[error("wrapping the layer key failed")]
    Wrap(#[source] UnwrapFailure),
    /// Encryption was asked for without any recipient.
    #[error("no recipients to encrypt for")]
    NoRecipients,
}

/// Each failure with its chain of causes (the broker's refusal reason, the unwrap verdict), as
/// several failures cannot all be one `source`.
fn failures(list: &[UnwrapFailure]) -> String {
    let mut out = String::new();
    for (i, failure) in list.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&failure.to_string());
        let mut cause = std::error::Error::source(failure);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
    }
    out
}

/// Why one wrapped key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UnwrapFailure {
    /// A JWE recipient.
    #[error("jwe")]
    Jwe(#[from] JweError),
    /// The key-provider packet.
    #[error("key provider")]
    Provider(#[from] ProviderError),
    /// JWE annotation present but no private keys configured.
    #[error("jwe: no private keys configured")]
    NoJweKeys,
    /// Key-provider annotation present but no provider configured.
    #[error("key provider: none configured")]
    NoProvider,
}

/// What can unwrap layer keys: JWE private keys and/or a key provider.
#[derive(Default, Clone)]
pub struct DecryptConfig {
    /// Private keys for JWE recipients.
    pub jwe_keys: Vec<PrivateKey>,
    /// The key provider for `provider.attestation-agent` packets.
    pub provider: Option<Arc<dyn KeyProvider>>,
}

impl std::fmt::Debug for DecryptConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptConfig")
            .field("jwe_keys", &self.jwe_keys.len())
            .field("provider", &self.provider.is_some())
            .finish()
    }
}

/// Go's `[]byte` in JSON: standard base64, or `null`.
mod b64_bytes {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&B64.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| B64.decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Go's `map[string][]byte` in JSON.
mod b64_map {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let m: BTreeMap<&String, String> = v.iter().map(|(k, b)| (k, B64.encode(b))).collect();
        m.serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let m: Option<BTreeMap<String, String>> = Option::deserialize(d)?;
        m.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                B64.decode(v)
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

#[derive(Serialize, Deserialize)]
struct PrivateOptions {
    #[serde(with = "b64_bytes", default)]
    symkey: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(with = "b64_map", default)]
    cipheroptions: BTreeMap<String, Vec<u8>>,
}

impl Drop for PrivateOptions {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = self.symkey.as_mut() {
            k.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct PublicOptions {
    #[serde(default)]
    cipher: String,
    #[serde(with = "b64_bytes", default)]
    hmac: Option<Vec<u8>>,
    #[serde(with = "b64_map", default)]
    cipheroptions: BTreeMap<String, Vec<u8>>,
}

fn annotation<'a>(
    annotations: &'a BTreeMap<String, String>,
    name: &'static str,
) -> Result<Option<&'a str>, OcicryptError> {
    match annotations.get(name) {
        Some(v) if v.len() > MAX_ANNOTATION_LEN => Err(OcicryptError::AnnotationTooLarge(name)),
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other.map(String::as_str)),
    }
}

/// Unwraps the key of an encrypted layer from its descriptor's annotations.
pub async fn unwrap_layer_key(
    annotations: &BTreeMap<String, String>,
    config: &DecryptConfig,
) -> Result<LayerKey, OcicryptError> {
    let priv_json = unwrap_private_options(annotations, config).await?;
    let private: PrivateOptions =
        serde_json::from_slice(&priv_json).map_err(|e| OcicryptError::Options("private", e))?;
    let public: PublicOptions = match annotation(annotations, ANNOTATION_PUBOPTS)? {
        Some(v) => {
            let raw = B64
                .decode(v)
                .map_err(|_| OcicryptError::Base64(ANNOTATION_PUBOPTS))?;
            serde_json::from_slice(&raw).map_err(|e| OcicryptError::Options("public", e))?
        }
        None => PublicOptions::default(),
    };
    // Before `pubopts` existed the cipher was implied; ocicrypt looks options up in the public
    // set first, then the private one.
    if !public.cipher.is_empty() && public.cipher != CIPHER_AES_256_CTR_HMAC_SHA256 {
        return Err(OcicryptError::UnsupportedCipher(
            public.cipher.chars().take(64).collect(),
        ));
    }
    let opt = |name: &str| {
        public
            .cipheroptions
            .get(name)
            .or_else(|| private.cipheroptions.get(name))
    };
    let hmac = public
        .hmac
        .as_ref()
        .or_else(|| opt("hmac"))
        .ok_or(OcicryptError::MissingHmac)?;
    let nonce = opt("nonce").ok_or(OcicryptError::MissingNonce)?;
    let symkey = private.symkey.as_deref().unwrap_or_default();
    Ok(LayerKey::new(symkey, nonce, hmac)?)
}

async fn unwrap_private_options(
    annotations: &BTreeMap<String, String>,
    config: &DecryptConfig,
) -> Result<Zeroizing<Vec<u8>>, OcicryptError> {
    let mut failures = Vec::new();
    let mut any = false;
    if let Some(v) = annotation(annotations, ANNOTATION_JWE)? {
        any = true;
        if config.jwe_keys.is_empty() {
            failures.push(UnwrapFailure::NoJweKeys);
        } else {
            for part in v.split(',') {
                let raw = B64
                    .decode(part)
                    .map_err(|_| OcicryptError::Base64(ANNOTATION_JWE))?;
                match jwe::decrypt(&raw, &config.jwe_keys) {
                    Ok(opts) => return Ok(opts),
                    Err(e) => failures.push(e.into()),
                }
            }
        }
    }
    if let Some(v) = annotation(annotations, ANNOTATION_PROVIDER_AA)? {
        any = true;
        match &config.provider {
            None => failures.push(UnwrapFailure::NoProvider),
            Some(p) => {
                for part in v.split(',') {
                    let raw = B64
                        .decode(part)
                        .map_err(|_| OcicryptError::Base64(ANNOTATION_PROVIDER_AA))?;
                    match provider::unwrap(&raw, p.as_ref()).await {
                        Ok(opts) => return Ok(opts),
                        Err(e) => failures.push(e.into()),
                    }
                }
            }
        }
    }
    if any {
        Err(OcicryptError::Unwrap(failures))
    } else {
        Err(OcicryptError::NoWrappedKeys)
    }
}

/// Who an encrypted layer is for.
#[derive(Debug, Default, Clone)]
pub struct Recipients {
    /// JWE recipients (one JWE with one recipient entry per key).
    pub jwe: Vec<PublicKey>,
    /// Key-provider form: the KEK's id in the broker and the KEK itself.
    pub provider: Option<(KeyId, Zeroizing<Vec<u8>>)>,
}

/// Encrypts a layer blob (`plain`, whose digest is `plain_digest`) into `out`; returns the
/// ciphertext's size and digest and the annotations to put on its descriptor.
pub fn encrypt_layer<R: Read, W: Write>(
    plain: R,
    mut out: W,
    plain_digest: &Digest,
    recipients: &Recipients,
) -> Result<EncryptedLayer, OcicryptError> {
    if recipients.jwe.is_empty() && recipients.provider.is_none() {
        return Err(OcicryptError::NoRecipients);
    }
    let mut hashing = HashWriter {
        inner: &mut out,
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
    };
    let p = cipher::encrypt(plain, &mut hashing)?;
    let digest = Digest::from_bytes(sha2::Digest::finalize(hashing.hasher).into());
    let private = PrivateOptions {
        symkey: Some(p.key.to_vec()),
        digest: Some(plain_digest.to_string()),
        cipheroptions: BTreeMap::from([("nonce".to_owned(), p.nonce.to_vec())]),
    };
    let private = Zeroizing::new(
        serde_json::to_vec(&private).map_err(|e| OcicryptError::Options("private", e))?,
    );
    let public = PublicOptions {
        cipher: CIPHER_AES_256_CTR_HMAC_SHA256.to_owned(),
        hmac: Some(p.hmac.to_vec()),
        cipheroptions: BTreeMap::new(),
    };
    let public = serde_json::to_vec(&public).map_err(|e| OcicryptError::Options("public", e))?;
    let mut annotations = BTreeMap::new();
    if !recipients.jwe.is_empty() {
        let jwe = jwe::encrypt_general(&private, &recipients.jwe)
            .map_err(|e| OcicryptError::Wrap(e.into()))?;
        annotations.insert(ANNOTATION_JWE.to_owned(), B64.encode(jwe));
    }
    if let Some((kid, kek)) = &recipients.provider {
        let packet =
            provider::wrap(kid, kek, &private).map_err(|e| OcicryptError::Wrap(e.into()))?;
        annotations.insert(ANNOTATION_PROVIDER_AA.to_owned(), B64.encode(packet));
    }
    annotations.insert(ANNOTATION_PUBOPTS.to_owned(), B64.encode(public));
    Ok(EncryptedLayer {
        size: p.size,
        digest,
        annotations,
    })
}

/// The result of [`encrypt_layer`].
#[derive(Debug, Clone)]
pub struct EncryptedLayer {
    /// Ciphertext size.
    pub size: u64,
    /// Ciphertext digest.
    pub digest: Digest,
    /// Annotations for the encrypted layer's descriptor.
    pub annotations: BTreeMap<String, String>,
}

struct HashWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, buf.get(..n).unwrap_or_default());
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn decrypt(
        ct: &[u8],
        ann: &BTreeMap<String, String>,
        cfg: &DecryptConfig,
    ) -> Result<Vec<u8>, OcicryptError> {
        let key = block_on(unwrap_layer_key(ann, cfg))?;
        let mut out = Vec::new();
        key.open(Cursor::new(ct))?.read_to_end(&mut out).unwrap();
        Ok(out)
    }

    #[test]
    fn jwe_and_provider_recipients_both_decrypt() {
        let ec = PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng));
        let kid = KeyId::parse("kbs:///default/image-kek/1").unwrap();
        let kek = Zeroizing::new(vec![3u8; 32]);
        let recipients = Recipients {
            jwe: vec![ec.public_key()],
            provider: Some((kid.clone(), kek.clone())),
        };
        let plain = b"compressed layer bytes".repeat(1000);
        let mut ct = Vec::new();
        let enc = encrypt_layer(&plain[..], &mut ct, &Digest::of(&plain), &recipients).unwrap();
        assert_eq!(enc.digest, Digest::of(&ct));
        assert_eq!(enc.size, ct.len() as u64);

        let by_jwe = DecryptConfig {
            jwe_keys: vec![ec],
            provider: None,
        };
        assert_eq!(decrypt(&ct, &enc.annotations, &by_jwe).unwrap(), plain);

        let mut p = StaticKeyProvider::default();
        p.insert(kid, kek.to_vec());
        let by_provider = DecryptConfig {
            jwe_keys: vec![],
            provider: Some(Arc::new(p)),
        };
        assert_eq!(decrypt(&ct, &enc.annotations, &by_provider).unwrap(), plain);
    }

    #[test]
    fn wrong_keys_missing_keys_and_tampering_are_refused() {
        let ec = PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng));
        let recipients = Recipients {
            jwe: vec![ec.public_key()],
            provider: None,
        };
        let plain = vec![5u8; 4096];
        let mut ct = Vec::new();
        let enc = encrypt_layer(&plain[..], &mut ct, &Digest::of(&plain), &recipients).unwrap();

        let other = DecryptConfig {
            jwe_keys: vec![PrivateKey::P256(p256::SecretKey::random(
                &mut rand::rngs::OsRng,
            ))],
            provider: None,
        };
        let err = decrypt(&ct, &enc.annotations, &other).unwrap_err();
        assert!(
            matches!(&err, OcicryptError::Unwrap(f) if matches!(f[..], [UnwrapFailure::Jwe(JweError::NoMatchingKey { .. })])),
            "{err}"
        );

        let err = decrypt(&ct, &enc.annotations, &DecryptConfig::default()).unwrap_err();
        assert!(
            matches!(&err, OcicryptError::Unwrap(f) if matches!(f[..], [UnwrapFailure::NoJweKeys]))
        );

        let right = DecryptConfig {
            jwe_keys: vec![ec],
            provider: None,
        };
        let mut bad = ct.clone();
        bad[100] ^= 1;
        assert!(matches!(
            decrypt(&bad, &enc.annotations, &right),
            Err(OcicryptError::Cipher(CipherError::HmacMismatch))
        ));

        // A forged pubopts HMAC cannot be made without the key.
        let mut ann = enc.annotations.clone();
        let forged = PublicOptions {
            cipher: CIPHER_AES_256_CTR_HMAC_SHA256.into(),
            hmac: Some(vec![0; 32]),
            cipheroptions: BTreeMap::new(),
        };
        ann.insert(
            ANNOTATION_PUBOPTS.into(),
            B64.encode(serde_json::to_vec(&forged).unwrap()),
        );
        assert!(matches!(
            decrypt(&ct, &ann, &right),
            Err(OcicryptError::Cipher(CipherError::HmacMismatch))
        ));

        let mut ann = enc.annotations.clone();
        let other_cipher = PublicOptions {
            cipher: "AES_128_GCM".into(),
            hmac: None,
            cipheroptions: BTreeMap::new(),
        };
        ann.insert(
            ANNOTATION_PUBOPTS.into(),
            B64.encode(serde_json::to_vec(&other_cipher).unwrap()),
        );
        assert!(matches!(
            decrypt(&ct, &ann, &right),
            Err(OcicryptError::UnsupportedCipher(_))
        ));

        assert!(matches!(
            decrypt(&ct, &BTreeMap::new(), &right),
            Err(OcicryptError::NoWrappedKeys)
        ));
        let mut ann = enc.annotations.clone();
        ann.insert(ANNOTATION_JWE.into(), "!!!".into());
        assert!(matches!(
            decrypt(&ct, &ann, &right),
            Err(OcicryptError::Base64(_))
        ));
        ann.insert(ANNOTATION_JWE.into(), "A".repeat(MAX_ANNOTATION_LEN + 1));
        assert!(matches!(
            decrypt(&ct, &ann, &right),
            Err(OcicryptError::AnnotationTooLarge(_))
        ));
    }

    #[test]
    fn media_types() {
        let t = "application/vnd.oci.image.layer.v1.tar+gzip";
        assert_eq!(encrypted_media_type(t), format!("{t}+encrypted"));
        assert!(is_encrypted(&encrypted_media_type(t)));
        assert_eq!(decrypted_media_type(&encrypted_media_type(t)), t);
        assert_eq!(
            encrypted_media_type(&encrypted_media_type(t)),
            format!("{t}+encrypted")
        );
    }

    #[test]
    fn unwrap_failures_show_their_causes() {
        let key_id = KeyId::parse("kbs:///default/image-key/demo").unwrap();
        let err = OcicryptError::Unwrap(vec![
            UnwrapFailure::Provider(ProviderError::Provider(KeyProviderError {
                key_id,
                source: Box::new(std::io::Error::other(
                    "measurement is not a reference value",
                )),
            })),
            UnwrapFailure::NoJweKeys,
        ]);
        assert_eq!(
            err.to_string(),
            "could not unwrap the layer key: key provider: key provider could not supply key \
             kbs:///default/image-key/demo: measurement is not a reference value; \
             jwe: no private keys configured"
        );
    }
}
