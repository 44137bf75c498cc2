//! Cosign (sigstore) signatures with public keys, verified and made the way containers/image
//! does for `sigstoreSigned` with `keyPath` / `keyData`.
//!
//! Signatures are "sigstore attachments" in the image's own repository: an OCI manifest tagged
//! `sha256-<hex>.sig` (the signed manifest's digest), whose layers of media type
//! [`SIGNATURE_MEDIA_TYPE`] are each one payload blob (the shared JSON payload with type
//! `cosign container image signature`), with the base64 DER ECDSA signature over the payload
//! bytes in the layer annotation [`SIGNATURE_ANNOTATION`]. Other layers (attestations, ...) are
//! not signatures and are skipped.
//!
//! An image is accepted when one signature verifies with one of the trusted keys, signs the
//! digest of the manifest that was resolved, and claims an identity the `signedIdentity` rule
//! accepts for the reference the image was pulled by. Everything fetched is bounded before it is
//! used: the attachment manifest, the number of its layers, each payload and each signature.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::Reference;

use crate::digest::Digest;
use crate::oci::{self, Descriptor, ImageConfig, Manifest, RootFs};
use crate::pull::{PullError, Registry, ResolvedImage};
use crate::signature::cosign_key::{
    CosignKeyError, CosignPrivateKey, CosignPublicKey, MAX_KEY_FILE,
};
use crate::signature::identity::{DockerReference, IdentityError, SignedIdentity};
use crate::signature::payload::{MAX_PAYLOAD_BYTES, PayloadError, PayloadKind, SignedPayload};

/// Media type of a cosign signature payload layer.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Most layers accepted in an attachment manifest.
const MAX_ATTACHMENTS: usize = 64;
/// Largest attachment manifest or config accepted (real ones are a few KiB).
const MAX_ATTACHMENT_JSON: usize = 256 << 10;
/// Longest base64 signature annotation accepted (a P-384 DER signature is ~140 characters).
const MAX_SIGNATURE_B64: usize = 1024;

/// Why one signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureRejection {
    /// The payload layer is larger than a payload may be.
    #[error("signature payload of {0} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge(u64),
    /// The layer has no signature annotation.
    #[error("no {SIGNATURE_ANNOTATION} annotation")]
    MissingSignature,
    /// The signature annotation is too long or not base64.
    #[error("malformed {SIGNATURE_ANNOTATION} annotation")]
    MalformedSignature,
    /// No trusted key verifies the signature over the payload.
    #[error("cryptographic signature does not verify with any trusted key")]
    Cryptographic,
    /// The payload is malformed, or signs another manifest or identity.
    #[error("signature payload refused")]
    Payload(#[source] PayloadError),
}

/// The reasons each signature was refused.
#[derive(Debug)]
pub struct Rejections(Vec<SignatureRejection>);

impl Rejections {
    /// One reason per signature, in attachment order.
    pub fn reasons(&self) -> &[SignatureRejection] {
        &self.0
    }
}

impl fmt::Display for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "signature {}: {r}", i + 1)?;
            let mut cause = std::error::Error::source(r);
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for Rejections {}

/// Errors from verifying or making sigstore signatures.
#[derive(Debug, thiserror::Error)]
pub enum SigstoreError {
    /// The image reference does not parse.
    #[error("image reference")]
    Reference(#[source] IdentityError),
    /// The registry request failed (boxed: registry errors are large).
    #[error("registry")]
    Registry(#[source] Box<PullError>),
    /// The image has no sigstore attachment manifest, or no signature layer in it.
    #[error("a sigstore signature is required, but {image} has none")]
    NoSignatures {
        /// The image.
        image: String,
    },
    /// The attachment manifest is malformed or not an OCI manifest.
    #[error("malformed sigstore attachment manifest")]
    AttachmentManifest(#[source] serde_json::Error),
    /// The attachment manifest is of another media type.
    #[error("sigstore attachment manifest has media type {0:?}")]
    AttachmentMediaType(String),
    /// The attachment manifest or config is too large, or lists too many layers.
    #[error("sigstore attachment {what} exceeds {limit}")]
    AttachmentTooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Signatures exist but none was accepted.
    #[error("no sigstore signature of {image} was accepted: {rejections}")]
    Rejected {
        /// The image.
        image: String,
        /// Why each was refused.
        #[source]
        rejections: Rejections,
    },
    /// A policy names both or neither of `keyPath` and `keyData`.
    #[error("sigstoreSigned needs exactly one of keyPath and keyData")]
    KeySource,
    /// The policy's key file cannot be read.
    #[error("cannot read public key file {0}")]
    KeyFile(String, #[source] std::io::Error),
    /// `keyData` is not base64.
    #[error("sigstoreSigned keyData is not base64")]
    KeyData(#[source] base64::DecodeError),
    /// A key is unusable, or signing failed.
    #[error("cosign key")]
    Key(#[source] CosignKeyError),
    /// The image to sign has neither tag nor digest.
    #[error("cannot sign {0}: the reference has neither tag nor digest")]
    NameOnly(String),
}

/// The public key a `sigstoreSigned` requirement names: `keyPath` (a PEM file) or `keyData`
/// (the PEM, base64-encoded), exactly one of them.
pub fn policy_public_key(
    key_path: Option<&str>,
    key_data: Option<&str>,
) -> Result<CosignPublicKey, SigstoreError> {
    let pem = match (key_path, key_data) {
        (Some(path), None) => read_bounded(Path::new(path))
            .map_err(|e| SigstoreError::KeyFile(path.chars().take(256).collect(), e))?,
        (None, Some(data)) => {
            if data.len() > MAX_KEY_FILE * 2 {
                return Err(SigstoreError::Key(CosignKeyError::TooLarge));
            }
            BASE64.decode(data.trim()).map_err(SigstoreError::KeyData)?
        }
        _ => return Err(SigstoreError::KeySource),
    };
    CosignPublicKey::from_pem(&pem).map_err(SigstoreError::Key)
}

/// Reads at most [`MAX_KEY_FILE`] + 1 bytes (so that the key parser sees an oversized file).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(MAX_KEY_FILE).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The tag of the attachment manifest for `digest`.
pub fn attachment_tag(digest: &Digest) -> String {
    format!("sha256-{}.sig", digest.hex())
}

/// One signature layer as fetched.
#[derive(Debug, Clone)]
enum Attachment {
    /// The payload bytes and the signature annotation.
    Signed {
        payload: Vec<u8>,
        signature: Option<String>,
    },
    /// A payload layer larger than a payload may be (not downloaded).
    Oversized(u64),
}

/// Verifies that `image` carries a sigstore signature by one of `keys` whose claims satisfy
/// `identity`. Returns the accepted payload.
pub async fn verify_sigstore_signed(
    registry: &Registry,
    image: &ResolvedImage,
    keys: &[CosignPublicKey],
    identity: &SignedIdentity,
) -> Result<SignedPayload, SigstoreError> {
    let pulled =
        DockerReference::parse_pulled(&image.reference).map_err(SigstoreError::Reference)?;
    let reference = oci_reference(&image.reference)?;
    let attachments = fetch_attachments(registry, &reference, &image.signed_digest).await?;
    let accepted = accept(
        &attachments,
        keys,
        &image.signed_digest,
        identity,
        &pulled,
        &image.reference,
    )?;
    tracing::info!(
        image = %image.reference,
        manifest = %image.signed_digest,
        signed_identity = %accepted.docker_reference,
        "sigstore signature accepted"
    );
    Ok(accepted)
}

fn registry_error(e: PullError) -> SigstoreError {
    SigstoreError::Registry(Box::new(e))
}

fn oci_reference(image: &str) -> Result<Reference, SigstoreError> {
    image
        .parse()
        .map_err(|e| registry_error(PullError::Reference(image.chars().take(256).collect(), e)))
}

/// Parses an attachment manifest, bounded.
fn parse_attachment_manifest(bytes: &[u8]) -> Result<Manifest, SigstoreError> {
    if bytes.len() > MAX_ATTACHMENT_JSON {
        return Err(SigstoreError::AttachmentTooLarge {
            what: "manifest",
            limit: MAX_ATTACHMENT_JSON,
        });
    }
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(SigstoreError::AttachmentManifest)?;
    if let Some(mt) = &manifest.media_type
        && mt != oci::MEDIA_TYPE_MANIFEST
    {
        return Err(SigstoreError::AttachmentMediaType(
            mt.chars().take(128).collect(),
        ));
    }
    if manifest.layers.len() > MAX_ATTACHMENTS {
        return Err(SigstoreError::AttachmentTooLarge {
            what: "layer count",
            limit: MAX_ATTACHMENTS,
        });
    }
    Ok(manifest)
}

/// Fetches the signature layers attached to `digest` (empty when there is no attachment
/// manifest).
async fn fetch_attachments(
    registry: &Registry,
    reference: &Reference,
    digest: &Digest,
) -> Result<Vec<Attachment>, SigstoreError> {
    let tag = attachment_tag(digest);
    let Some(bytes) = registry
        .tagged_manifest(reference, &tag)
        .await
        .map_err(registry_error)?
    else {
        tracing::debug!(tag, "no sigstore attachment manifest");
        return Ok(Vec::new());
    };
    let manifest = parse_attachment_manifest(&bytes)?;
    let mut out = Vec::new();
    for layer in &manifest.layers {
        if layer.media_type != SIGNATURE_MEDIA_TYPE {
            continue;
        }
        if layer.size > MAX_PAYLOAD_BYTES as u64 {
            out.push(Attachment::Oversized(layer.size));
            continue;
        }
        let payload = registry
            .small_blob(reference, layer, MAX_PAYLOAD_BYTES as u64)
            .await
            .map_err(registry_error)?;
        out.push(Attachment::Signed {
            payload,
            signature: layer.annotations.get(SIGNATURE_ANNOTATION).cloned(),
        });
    }
    Ok(out)
}

/// The decision on fetched attachments: the first signature that verifies with a key and whose
/// claims hold is accepted; otherwise every reason is reported.
fn accept(
    attachments: &[Attachment],
    keys: &[CosignPublicKey],
    manifest: &Digest,
    identity: &SignedIdentity,
    pulled: &DockerReference,
    image: &str,
) -> Result<SignedPayload, SigstoreError> {
    if attachments.is_empty() {
        return Err(SigstoreError::NoSignatures {
            image: image.to_owned(),
        });
    }
    let mut reasons = Vec::new();
    for a in attachments {
        let verdict = check_one(a, keys).and_then(|payload| {
            payload
                .check_claims(manifest, identity, pulled)
                .map_err(SignatureRejection::Payload)?;
            Ok(payload)
        });
        match verdict {
            Ok(p) => return Ok(p),
            Err(r) => reasons.push(r),
        }
    }
    Err(SigstoreError::Rejected {
        image: image.to_owned(),
        rejections: Rejections(reasons),
    })
}

/// Verifies one signature cryptographically, then parses its payload (only then: nothing in
/// the payload is looked at before its signature verifies).
fn check_one(
    a: &Attachment,
    keys: &[CosignPublicKey],
) -> Result<SignedPayload, SignatureRejection> {
    let (payload, signature) = match a {
        Attachment::Signed { payload, signature } => (payload, signature),
        Attachment::Oversized(n) => return Err(SignatureRejection::PayloadTooLarge(*n)),
    };
    let b64 = signature
        .as_deref()
        .ok_or(SignatureRejection::MissingSignature)?;
    if b64.len() > MAX_SIGNATURE_B64 {
        return Err(SignatureRejection::MalformedSignature);
    }
    let signature = BASE64
        .decode(b64)
        .map_err(|_| SignatureRejection::MalformedSignature)?;
    if !keys.iter().any(|k| k.verify(payload, &signature).is_ok()) {
        return Err(SignatureRejection::Cryptographic);
    }
    SignedPayload::parse(payload, PayloadKind::Cosign).map_err(SignatureRejection::Payload)
}

/// What [`sign_image`] signed and where it stored the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedImage {
    /// The signed identity (`docker-reference`).
    pub docker_reference: String,
    /// The signed manifest digest (the top-level one: an index for a multi-platform image).
    pub manifest_digest: Digest,
    /// The attachment tag the signature was pushed under.
    pub attachment_tag: String,
}

/// Signs `image` (`host/repo:tag` or `@digest`) with `key`, cosign-compatibly: resolves its
/// top-level manifest (the index of a multi-platform image), signs a payload for that digest and the image's name, and pushes the signature into
/// the image's sigstore attachment manifest (keeping the signatures already there).
pub async fn sign_image(
    registry: &Registry,
    image: &str,
    key: &CosignPrivateKey,
) -> Result<SignedImage, SigstoreError> {
    let named = DockerReference::parse_normalized(image).map_err(SigstoreError::Reference)?;
    if named.is_name_only() {
        return Err(SigstoreError::NameOnly(image.chars().take(256).collect()));
    }
    let resolved = registry.resolve(image).await.map_err(registry_error)?;
    let digest = resolved.signed_digest;
    let payload = SignedPayload::new(PayloadKind::Cosign, &named.to_string(), digest)
        .with_creator(concat!("tsuba ", env!("CARGO_PKG_VERSION")))
        .with_timestamp(unix_now());
    let payload = payload.to_json();
    let signature = BASE64.encode(key.sign(&payload).map_err(SigstoreError::Key)?);

    let reference = oci_reference(image)?;
    let tag = attachment_tag(&digest);
    let existing = match registry
        .tagged_manifest(&reference, &tag)
        .await
        .map_err(registry_error)?
    {
        Some(bytes) => {
            let manifest = parse_attachment_manifest(&bytes)?;
            let config = registry
                .small_blob(&reference, &manifest.config, MAX_ATTACHMENT_JSON as u64)
                .await
                .map_err(registry_error)?;
            Some((manifest, config))
        }
        None => None,
    };
    let payload_desc = descriptor(SIGNATURE_MEDIA_TYPE, &payload, Some(signature));
    registry
        .push_blob_bytes(&reference, payload)
        .await
        .map_err(registry_error)?;
    let (manifest, config) = attachment_documents(existing, payload_desc)?;
    registry
        .push_blob_bytes(&reference, config)
        .await
        .map_err(registry_error)?;
    registry
        .push_tagged_manifest(&reference, &tag, manifest, oci::MEDIA_TYPE_MANIFEST)
        .await
        .map_err(registry_error)?;
    tracing::info!(image, manifest = %digest, tag, "sigstore signature pushed");
    Ok(SignedImage {
        docker_reference: named.to_string(),
        manifest_digest: digest,
        attachment_tag: tag,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn descriptor(media_type: &str, bytes: &[u8], signature: Option<String>) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
        annotations: signature
            .map(|s| [(SIGNATURE_ANNOTATION.to_owned(), s)].into())
            .unwrap_or_default(),
        platform: None,
        extra: Default::default(),
    }
}

/// The attachment manifest and config after adding `layer` to `existing` (when there is one;
/// its other layers are kept, and a layer already there is not added twice).
fn attachment_documents(
    existing: Option<(Manifest, Vec<u8>)>,
    layer: Descriptor,
) -> Result<(Vec<u8>, Vec<u8>), SigstoreError> {
    let fresh_config = || ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        extra: [
            ("architecture".to_owned(), "".into()),
            ("os".to_owned(), "".into()),
            (
                "config".to_owned(),
                serde_json::Value::Object(Default::default()),
            ),
        ]
        .into_iter()
        .collect(),
    };
    let (mut manifest, mut config) = match existing {
        Some((m, c)) => {
            let config = serde_json::from_slice(&c).unwrap_or_else(|_| {
                let mut f = fresh_config();
                f.rootfs.diff_ids = m.layers.iter().map(|l| l.digest).collect();
                f
            });
            (m, config)
        }
        None => (
            Manifest {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
                config: descriptor(oci::MEDIA_TYPE_CONFIG, b"", None),
                layers: Vec::new(),
                annotations: Default::default(),
                extra: Default::default(),
            },
            fresh_config(),
        ),
    };
    if !manifest.layers.contains(&layer) {
        if manifest.layers.len() >= MAX_ATTACHMENTS {
            return Err(SigstoreError::AttachmentTooLarge {
                what: "layer count",
                limit: MAX_ATTACHMENTS,
            });
        }
        config.rootfs.diff_ids.push(layer.digest);
        manifest.layers.push(layer);
    }
    let config_bytes = serde_json::to_vec(&config).map_err(SigstoreError::AttachmentManifest)?;
    manifest.config = descriptor(oci::MEDIA_TYPE_CONFIG, &config_bytes, None);
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(SigstoreError::AttachmentManifest)?;
    Ok((manifest_bytes, config_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(b"the manifest")
    }

    fn pulled() -> DockerReference {
        DockerReference::parse_pulled("reg.io/team/app:v1").unwrap()
    }

    fn signed(key: &CosignPrivateKey, reference: &str, digest: Digest) -> Attachment {
        let payload = SignedPayload::new(PayloadKind::Cosign, reference, digest).to_json();
        Attachment::Signed {
            signature: Some(BASE64.encode(key.sign(&payload).unwrap())),
            payload,
        }
    }

    /// The payload and signature of a `Signed` attachment, to tamper with.
    fn parts(a: &mut Attachment) -> (&mut Vec<u8>, &mut Option<String>) {
        match a {
            Attachment::Signed { payload, signature } => (payload, signature),
            Attachment::Oversized(_) => panic!("not a signed attachment"),
        }
    }

    fn decide(
        attachments: Vec<Attachment>,
        keys: &[CosignPublicKey],
    ) -> Result<SignedPayload, SigstoreError> {
        accept(
            &attachments,
            keys,
            &digest(),
            &SignedIdentity::default(),
            &pulled(),
            "reg.io/team/app:v1",
        )
    }

    fn only_reason(r: Result<SignedPayload, SigstoreError>) -> SignatureRejection {
        match r {
            Err(SigstoreError::Rejected { rejections, .. }) => {
                let mut v = rejections.0;
                assert_eq!(v.len(), 1);
                v.remove(0)
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_good_signature_is_accepted_among_bad_ones() {
        let key = CosignPrivateKey::generate();
        let other = CosignPrivateKey::generate();
        let good = signed(&key, "reg.io/team/app:v1", digest());
        let by_other = signed(&other, "reg.io/team/app:v1", digest());
        let p = decide(vec![by_other.clone(), good], &[key.public_key()]).unwrap();
        assert_eq!(p.docker_reference, "reg.io/team/app:v1");
        assert_eq!(p.manifest_digest, digest());
        // Either trusted key is enough.
        decide(vec![by_other], &[key.public_key(), other.public_key()]).unwrap();
    }

    #[test]
    fn each_kind_of_bad_signature_is_refused_with_its_reason() {
        let key = CosignPrivateKey::generate();
        let keys = [key.public_key()];
        // Wrong key.
        let other = CosignPrivateKey::generate();
        assert!(matches!(
            only_reason(decide(
                vec![signed(&other, "reg.io/team/app:v1", digest())],
                &keys
            )),
            SignatureRejection::Cryptographic
        ));
        // Another manifest.
        assert!(matches!(
            only_reason(decide(
                vec![signed(&key, "reg.io/team/app:v1", Digest::of(b"x"))],
                &keys
            )),
            SignatureRejection::Payload(PayloadError::DigestMismatch { .. })
        ));
        // Another repository.
        assert!(matches!(
            only_reason(decide(
                vec![signed(&key, "reg.io/team/evil:v1", digest())],
                &keys
            )),
            SignatureRejection::Payload(PayloadError::Identity(_))
        ));
        // Tampered payload: one byte changed after signing.
        let mut t = signed(&key, "reg.io/team/app:v1", digest());
        let (payload, _) = parts(&mut t);
        let i = payload.len() - 3;
        payload[i] ^= 1;
        assert!(matches!(
            only_reason(decide(vec![t], &keys)),
            SignatureRejection::Cryptographic
        ));
        // Tampered signature: still base64, one bit flipped.
        let mut t = signed(&key, "reg.io/team/app:v1", digest());
        let (_, sig) = parts(&mut t);
        let mut raw = BASE64.decode(sig.as_ref().unwrap()).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        *sig = Some(BASE64.encode(raw));
        assert!(matches!(
            only_reason(decide(vec![t], &keys)),
            SignatureRejection::Cryptographic
        ));
        // Missing, non-base64 and oversized annotations.
        let mut t = signed(&key, "reg.io/team/app:v1", digest());
        *parts(&mut t).1 = None;
        assert!(matches!(
            only_reason(decide(vec![t.clone()], &keys)),
            SignatureRejection::MissingSignature
        ));
        *parts(&mut t).1 = Some("!!!".into());
        assert!(matches!(
            only_reason(decide(vec![t.clone()], &keys)),
            SignatureRejection::MalformedSignature
        ));
        *parts(&mut t).1 = Some("A".repeat(MAX_SIGNATURE_B64 + 4));
        assert!(matches!(
            only_reason(decide(vec![t], &keys)),
            SignatureRejection::MalformedSignature
        ));
        // A validly signed payload of the wrong type (simple signing) is refused too.
        let payload =
            SignedPayload::new(PayloadKind::SimpleSigning, "reg.io/team/app:v1", digest())
                .to_json();
        let t = Attachment::Signed {
            signature: Some(BASE64.encode(key.sign(&payload).unwrap())),
            payload,
        };
        assert!(matches!(
            only_reason(decide(vec![t], &keys)),
            SignatureRejection::Payload(PayloadError::WrongType { .. })
        ));
    }

    #[test]
    fn no_signature_is_its_own_error_and_oversized_payloads_are_reasons() {
        let key = CosignPrivateKey::generate();
        assert!(matches!(
            decide(vec![], &[key.public_key()]),
            Err(SigstoreError::NoSignatures { .. })
        ));
        let r = accept(
            &[Attachment::Oversized(1 << 30)],
            &[key.public_key()],
            &digest(),
            &SignedIdentity::default(),
            &pulled(),
            "x",
        );
        assert!(matches!(
            only_reason(r),
            SignatureRejection::PayloadTooLarge(_)
        ));
    }

    #[test]
    fn rejection_message_lists_every_reason() {
        let key = CosignPrivateKey::generate();
        let other = CosignPrivateKey::generate();
        let e = decide(
            vec![
                signed(&other, "reg.io/team/app:v1", digest()),
                signed(&key, "reg.io/team/evil:v1", digest()),
            ],
            &[key.public_key()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("signature 1: cryptographic"), "{e}");
        assert!(e.contains("signature 2: signature payload refused"), "{e}");
        assert!(e.contains("reg.io/team/evil:v1"), "{e}");
    }

    #[test]
    fn attachment_manifests_are_bounded_and_typed() {
        let many: Vec<_> = (0..=MAX_ATTACHMENTS)
            .map(|i| descriptor(SIGNATURE_MEDIA_TYPE, &i.to_le_bytes(), None))
            .collect();
        let m = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
            config: descriptor(oci::MEDIA_TYPE_CONFIG, b"{}", None),
            layers: many,
            annotations: Default::default(),
            extra: Default::default(),
        };
        let bytes = serde_json::to_vec(&m).unwrap();
        assert!(matches!(
            parse_attachment_manifest(&bytes),
            Err(SigstoreError::AttachmentTooLarge {
                what: "layer count",
                ..
            })
        ));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"x","digest":"{}","size":1}},"layers":[]}}"#,
            oci::MEDIA_TYPE_INDEX,
            Digest::of(b"")
        );
        assert!(matches!(
            parse_attachment_manifest(index.as_bytes()),
            Err(SigstoreError::AttachmentMediaType(_))
        ));
        assert!(matches!(
            parse_attachment_manifest(b"{\"layers\":7}"),
            Err(SigstoreError::AttachmentManifest(_))
        ));
        assert!(matches!(
            parse_attachment_manifest(&vec![b' '; MAX_ATTACHMENT_JSON + 1]),
            Err(SigstoreError::AttachmentTooLarge {
                what: "manifest",
                ..
            })
        ));
    }

    #[test]
    fn attachment_documents_append_and_keep_existing_signatures() {
        let a = descriptor(SIGNATURE_MEDIA_TYPE, b"one", Some("c2ln".into()));
        let (m1, c1) = attachment_documents(None, a.clone()).unwrap();
        let m1: Manifest = serde_json::from_slice(&m1).unwrap();
        assert_eq!(m1.layers, vec![a.clone()]);
        assert_eq!(m1.media_type.as_deref(), Some(oci::MEDIA_TYPE_MANIFEST));
        assert_eq!(m1.config.digest, Digest::of(&c1));
        let cfg: ImageConfig = serde_json::from_slice(&c1).unwrap();
        assert_eq!(cfg.rootfs.diff_ids, vec![a.digest]);

        let b = descriptor(SIGNATURE_MEDIA_TYPE, b"two", Some("c2lnMg==".into()));
        let (m2, c2) = attachment_documents(Some((m1.clone(), c1.clone())), b.clone()).unwrap();
        let m2: Manifest = serde_json::from_slice(&m2).unwrap();
        assert_eq!(m2.layers, vec![a.clone(), b.clone()]);
        let cfg: ImageConfig = serde_json::from_slice(&c2).unwrap();
        assert_eq!(cfg.rootfs.diff_ids, vec![a.digest, b.digest]);
        // The same signature again is not duplicated.
        let (m3, _) = attachment_documents(Some((m1, c1)), a.clone()).unwrap();
        let m3: Manifest = serde_json::from_slice(&m3).unwrap();
        assert_eq!(m3.layers, vec![a]);
    }

    #[test]
    fn policy_keys_come_from_exactly_one_source() {
        let key = CosignPrivateKey::generate();
        let pem = key.public_key().to_pem().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pub");
        std::fs::write(&path, &pem).unwrap();
        let p = path.to_str().unwrap();
        assert_eq!(policy_public_key(Some(p), None).unwrap(), key.public_key());
        let data = BASE64.encode(&pem);
        assert_eq!(
            policy_public_key(None, Some(&data)).unwrap(),
            key.public_key()
        );
        assert!(matches!(
            policy_public_key(Some(p), Some(&data)),
            Err(SigstoreError::KeySource)
        ));
        assert!(matches!(
            policy_public_key(None, None),
            Err(SigstoreError::KeySource)
        ));
        assert!(matches!(
            policy_public_key(None, Some("%%%")),
            Err(SigstoreError::KeyData(_))
        ));
        assert!(matches!(
            policy_public_key(Some("/nonexistent/k.pub"), None),
            Err(SigstoreError::KeyFile(..))
        ));
        // A private key file is not a public key.
        let private = format!(
            "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n",
            BASE64.encode(b"{}")
        );
        std::fs::write(&path, private).unwrap();
        assert!(matches!(
            policy_public_key(Some(p), None),
            Err(SigstoreError::Key(CosignKeyError::PublicKey))
        ));
        // An oversized file is refused by size.
        std::fs::write(&path, vec![b'A'; MAX_KEY_FILE + 10]).unwrap();
        assert!(matches!(
            policy_public_key(Some(p), None),
            Err(SigstoreError::Key(CosignKeyError::TooLarge))
        ));
    }

    #[test]
    fn attachment_tag_follows_containers_image() {
        let d = digest();
        assert_eq!(attachment_tag(&d), format!("sha256-{}.sig", d.hex()));
    }
}
