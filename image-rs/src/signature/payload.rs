//! The signed payload shared by GPG simple signing and cosign (containers-signature(5)):
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"reg.io/app:v1"},
//!              "image":{"docker-manifest-digest":"sha256:…"},
//!              "type":"atomic container signature"},
//!  "optional":{"creator":"…","timestamp":1700000000}}
//! ```
//!
//! Parsing is strict, as containers/image does it: `critical` and `optional` are both required
//! and nothing else may be at the top; `critical`, `image` and `identity` hold exactly their
//! listed keys (an unknown critical key is a reason to refuse, since the signer meant it to
//! matter); duplicate keys are refused everywhere; unknown `optional` keys are ignored. The
//! payload is bounded in size before it is parsed. Nothing here is trusted until the caller
//! has verified the cryptographic signature over these exact bytes.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::signature::identity::{DockerReference, IdentityError, SignedIdentity};

/// Largest payload accepted (real ones are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// Which signature format a payload belongs to; each has its own `critical.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// GPG simple signing: `atomic container signature`.
    SimpleSigning,
    /// Cosign (sigstore): `cosign container image signature`.
    Cosign,
}

impl PayloadKind {
    /// The `critical.type` string of this format.
    pub fn type_str(self) -> &'static str {
        match self {
            Self::SimpleSigning => "atomic container signature",
            Self::Cosign => "cosign container image signature",
        }
    }
}

/// Errors from parsing a payload or matching it against the image.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("signature payload of {0} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// Not the JSON structure described above.
    #[error("malformed signature payload")]
    Malformed(#[source] serde_json::Error),
    /// `critical.type` is not the one the caller's format uses.
    #[error("signature payload type {found:?} is not {expected:?}")]
    WrongType {
        /// The type the format requires.
        expected: &'static str,
        /// The type in the payload (truncated).
        found: String,
    },
    /// `docker-manifest-digest` is not a sha256 digest.
    #[error("signature payload digest")]
    Digest(#[source] crate::digest::DigestError),
    /// The payload signs another manifest.
    #[error("signature is for manifest {signed}, not {actual}")]
    DigestMismatch {
        /// The manifest digest in the payload.
        signed: Digest,
        /// The digest of the manifest that was pulled.
        actual: Digest,
    },
    /// The claimed identity does not satisfy the policy's `signedIdentity` rule.
    #[error("signature identity refused")]
    Identity(#[source] IdentityError),
}

/// A parsed (or to-be-signed) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    /// The signature format.
    pub kind: PayloadKind,
    /// `critical.identity.docker-reference`, as written by the signer.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: Digest,
    /// `optional.creator`.
    pub creator: Option<String>,
    /// `optional.timestamp` (Unix seconds).
    pub timestamp: Option<i64>,
}

impl SignedPayload {
    /// A payload to sign for `docker_reference` at `manifest_digest`, without optional fields.
    pub fn new(kind: PayloadKind, docker_reference: &str, manifest_digest: Digest) -> Self {
        Self {
            kind,
            docker_reference: docker_reference.to_owned(),
            manifest_digest,
            creator: None,
            timestamp: None,
        }
    }

    /// Sets `optional.creator`.
    pub fn with_creator(mut self, creator: &str) -> Self {
        self.creator = Some(creator.to_owned());
        self
    }

    /// Sets `optional.timestamp`.
    pub fn with_timestamp(mut self, unix_seconds: i64) -> Self {
        self.timestamp = Some(unix_seconds);
        self
    }

    /// The JSON bytes to sign (keys in sorted order, as containers/image writes them).
    pub fn to_json(&self) -> Vec<u8> {
        let doc = WireOut {
            critical: CriticalOut {
                identity: IdentityOut {
                    docker_reference: &self.docker_reference,
                },
                image: ImageOut {
                    docker_manifest_digest: self.manifest_digest.to_string(),
                },
                kind: self.kind.type_str(),
            },
            optional: OptionalOut {
                creator: self.creator.as_deref(),
                timestamp: self.timestamp,
            },
        };
        // Serialising plain strings and integers into memory cannot fail.
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// Parses `bytes` strictly as a payload of format `kind`.
    pub fn parse(bytes: &[u8], kind: PayloadKind) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge(bytes.len()));
        }
        let wire: WireIn = serde_json::from_slice(bytes).map_err(PayloadError::Malformed)?;
        if wire.critical.kind != kind.type_str() {
            return Err(PayloadError::WrongType {
                expected: kind.type_str(),
                found: wire.critical.kind.chars().take(80).collect(),
            });
        }
        // cosign writes `"optional": null` when there are no annotations; simple signing
        // always has an object.
        let optional = match (wire.optional, kind) {
            (Some(o), _) => o,
            (None, PayloadKind::Cosign) => OptionalIn::default(),
            (None, PayloadKind::SimpleSigning) => {
                return Err(PayloadError::Malformed(de::Error::custom(
                    "optional must be an object",
                )));
            }
        };
        let manifest_digest = wire
            .critical
            .image
            .docker_manifest_digest
            .parse()
            .map_err(PayloadError::Digest)?;
        Ok(Self {
            kind,
            docker_reference: wire.critical.identity.docker_reference,
            manifest_digest,
            creator: optional.creator,
            timestamp: optional.timestamp,
        })
    }

    /// Checks the payload's claims against the image: it must sign exactly `manifest` (the
    /// digest of the manifest that was resolved and will be used), and its identity must
    /// satisfy `rule` for the reference the image was pulled by.
    pub fn check_claims(
        &self,
        manifest: &Digest,
        rule: &SignedIdentity,
        pulled: &DockerReference,
    ) -> Result<(), PayloadError> {
        if self.manifest_digest != *manifest {
            return Err(PayloadError::DigestMismatch {
                signed: self.manifest_digest,
                actual: *manifest,
            });
        }
        rule.check(pulled, &self.docker_reference)
            .map_err(PayloadError::Identity)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    critical: CriticalIn,
    // Required, but may be null (cosign).
    #[serde(deserialize_with = "nullable_optional")]
    optional: Option<OptionalIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CriticalIn {
    #[serde(rename = "type")]
    kind: String,
    image: ImageIn,
    identity: IdentityIn,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageIn {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityIn {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

/// `optional`: known keys typed, others ignored, no key twice.
#[derive(Default)]
struct OptionalIn {
    creator: Option<String>,
    timestamp: Option<i64>,
}

fn nullable_optional<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<OptionalIn>, D::Error> {
    Option::<OptionalIn>::deserialize(d)
}

impl<'de> Deserialize<'de> for OptionalIn {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptionalIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OptionalIn, A::Error> {
                let mut seen = BTreeSet::new();
                let mut out = OptionalIn::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "creator" => out.creator = Some(map.next_value()?),
                        // An integer: fractional or exponent forms are refused.
                        "timestamp" => out.timestamp = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    if !seen.insert(key) {
                        return Err(de::Error::custom("duplicate key in optional"));
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    critical: CriticalOut<'a>,
    optional: OptionalOut<'a>,
}

#[derive(Serialize)]
struct CriticalOut<'a> {
    identity: IdentityOut<'a>,
    image: ImageOut,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct IdentityOut<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct ImageOut {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

#[derive(Serialize)]
struct OptionalOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Digest {
        format!("sha256:{HEX}").parse().unwrap()
    }

    fn doc(critical_extra: &str, optional: &str) -> String {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"reg.io/app:v1"}},"image":{{"docker-manifest-digest":"sha256:{HEX}"}},"type":"atomic container signature"{critical_extra}}},"optional":{optional}}}"#
        )
    }

    fn simple(s: &str) -> Result<SignedPayload, PayloadError> {
        SignedPayload::parse(s.as_bytes(), PayloadKind::SimpleSigning)
    }

    #[test]
    fn builder_output_is_the_documented_layout_and_parses_back() {
        let p = SignedPayload::new(PayloadKind::SimpleSigning, "reg.io/app:v1", digest())
            .with_creator("tsuba")
            .with_timestamp(1_700_000_000);
        let json = String::from_utf8(p.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"reg.io/app:v1"}},"image":{{"docker-manifest-digest":"sha256:{HEX}"}},"type":"atomic container signature"}},"optional":{{"creator":"tsuba","timestamp":1700000000}}}}"#
            )
        );
        assert_eq!(simple(&json).unwrap(), p);
        let c = SignedPayload::new(PayloadKind::Cosign, "reg.io/app:v1", digest());
        let json = c.to_json();
        assert!(
            String::from_utf8_lossy(&json)
                .ends_with(r#""type":"cosign container image signature"},"optional":{}}"#)
        );
        assert_eq!(SignedPayload::parse(&json, PayloadKind::Cosign).unwrap(), c);
    }

    #[test]
    fn parses_real_shapes() {
        let p = simple(&doc(
            "",
            r#"{"creator":"atomic 2.0.0","timestamp":1458239713,"x":[1]}"#,
        ))
        .unwrap();
        assert_eq!(p.docker_reference, "reg.io/app:v1");
        assert_eq!(p.manifest_digest, digest());
        assert_eq!(p.creator.as_deref(), Some("atomic 2.0.0"));
        assert_eq!(p.timestamp, Some(1_458_239_713));
        // cosign's `"optional": null`.
        let cosign =
            doc("", "null").replace("atomic container signature", PayloadKind::Cosign.type_str());
        let c = SignedPayload::parse(cosign.as_bytes(), PayloadKind::Cosign).unwrap();
        assert_eq!(c.creator, None);
    }

    #[test]
    fn type_is_checked_against_the_callers_format() {
        let json = doc("", "{}");
        assert!(matches!(
            SignedPayload::parse(json.as_bytes(), PayloadKind::Cosign),
            Err(PayloadError::WrongType { .. })
        ));
        assert!(matches!(
            simple(&json.replace("atomic container signature", "atomic container signaturex")),
            Err(PayloadError::WrongType { .. })
        ));
    }

    #[test]
    fn strictness() {
        let malformed = |s: &str| matches!(simple(s), Err(PayloadError::Malformed(_)));
        // Unknown critical keys, at every level.
        assert!(malformed(&doc(r#","extra":1"#, "{}")));
        assert!(malformed(&doc("", "{}").replace(
            r#""docker-reference":"reg.io/app:v1""#,
            r#""docker-reference":"reg.io/app:v1","x":"y""#
        )));
        assert!(malformed(&doc("", "{}").replace(
            r#""docker-manifest-digest""#,
            r#""x":"y","docker-manifest-digest""#
        )));
        assert!(malformed(
            &doc("", "{}").replace(r#"{"critical""#, r#"{"x":1,"critical""#)
        ));
        // Missing pieces.
        assert!(malformed(&doc("", "{}").replace(r#","optional":{}"#, "")));
        assert!(malformed(r#"{"optional":{}}"#));
        assert!(malformed(
            &doc("", "{}").replace(r#","type":"atomic container signature""#, "")
        ));
        // Duplicates.
        assert!(malformed(&doc(
            r#","type":"atomic container signature""#,
            "{}"
        )));
        assert!(malformed(&doc("", r#"{"creator":"a","creator":"b"}"#)));
        assert!(malformed(&doc("", r#"{"x":1,"x":2}"#)));
        // Types.
        assert!(malformed(&doc("", r#"{"timestamp":1.5}"#)));
        assert!(malformed(&doc("", r#"{"timestamp":"1"}"#)));
        assert!(malformed(&doc("", r#"{"creator":7}"#)));
        assert!(malformed(&doc("", "[]")));
        // Simple signing requires an optional object.
        assert!(malformed(&doc("", "null")));
        // Trailing data, truncation, not JSON.
        assert!(malformed(&format!("{} x", doc("", "{}"))));
        let full = doc("", "{}");
        assert!(malformed(&full[..full.len() - 1]));
        assert!(malformed("\u{0}"));
        // Digests.
        assert!(matches!(
            simple(&doc("", "{}").replace("sha256:", "sha512:")),
            Err(PayloadError::Digest(_))
        ));
        assert!(matches!(
            simple(&doc("", "{}").replace(HEX, &HEX.to_uppercase())),
            Err(PayloadError::Digest(_))
        ));
        // Size bound before parsing.
        let big = doc(
            "",
            &format!(r#"{{"pad":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES)),
        );
        assert!(matches!(simple(&big), Err(PayloadError::TooLarge(_))));
    }

    #[test]
    fn claims_are_checked_against_the_image() {
        let p = simple(&doc("", "{}")).unwrap();
        let pulled = DockerReference::parse_pulled("reg.io/app:v1").unwrap();
        let rule = SignedIdentity::default();
        p.check_claims(&digest(), &rule, &pulled).unwrap();
        assert!(matches!(
            p.check_claims(&Digest::of(b"other"), &rule, &pulled),
            Err(PayloadError::DigestMismatch { .. })
        ));
        let other = DockerReference::parse_pulled("reg.io/app:v2").unwrap();
        assert!(matches!(
            p.check_claims(&digest(), &rule, &other),
            Err(PayloadError::Identity(_))
        ));
    }
}
