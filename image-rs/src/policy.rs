//! The signature policy, with containers-policy.json semantics (`containers-policy.json(5)`):
//! for the `docker` transport the most specific scope wins (the full reference, then the
//! repository, then each parent namespace, then the registry host, then `*.` wildcard domains,
//! then the transport's `""` default, then the global `default`), and *every* requirement of
//! the chosen scope must be satisfied. Scopes are matched on the normalised reference
//! (`busybox` is `docker.io/library/busybox:latest`).
//!
//! Requirements: `insecureAcceptAnything`, `reject`, and `signedBy` (GPG simple signing: the
//! signatures are read from the lookaside storage given with [`Policy::with_lookaside`], at
//! least one must verify with the requirement's keys, sign exactly the resolved manifest and
//! claim an identity its `signedIdentity` rule accepts, `matchRepoDigestOrExact` when absent).
//! `sigstoreSigned` (cosign: signatures attached in the registry, by the requirement's public
//! key, same claims checks; [`check_sigstore_signed`]). A policy asking for signatures never
//! passes an unsigned image.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pull::{ImageVerifier, Registry, ResolvedImage, VerifyFuture};
use crate::signature::{
    DockerReference, GpgKeyring, IdentityError, KeyringError, Lookaside, LookasideConfig,
    LookasideError, SignedIdentity, SigstoreError, SimpleSigningError, policy_public_key,
    verify_sigstore_signed, verify_simple_signing,
};

/// Errors from parsing or applying a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy JSON is malformed.
    #[error("malformed signature policy")]
    Malformed(#[source] serde_json::Error),
    /// A scope lists no requirement (containers-policy.json forbids it).
    #[error("policy scope {0:?} has no requirements")]
    EmptyScope(String),
    /// A `signedIdentity` rule is unusable.
    #[error("policy scope {scope:?} has an invalid signedIdentity")]
    Identity {
        /// The scope.
        scope: String,
        /// The cause.
        #[source]
        source: IdentityError,
    },
    /// The image reference does not parse as a docker reference.
    #[error("image reference")]
    Reference(#[source] IdentityError),
    /// A `reject` requirement matched.
    #[error("policy rejects {0}")]
    Rejected(String),
    /// The keys of a `signedBy` requirement cannot be loaded.
    #[error("signedBy keys for {image}")]
    Keyring {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: KeyringError,
    },
    /// The image's signatures cannot be read.
    #[error("reading signatures of {image}")]
    Lookaside {
        /// The image.
        image: String,
        /// The cause.
        #[source]
        source: LookasideError,
    },
    /// No signature satisfies a `signedBy` requirement.
    #[error("signedBy requirement not satisfied for {image}")]
    SignedBy {
        /// The image.
        image: String,
        /// Why (each signature's reason).
        #[source]
        source: SimpleSigningError,
    },
    /// No signature satisfies a `sigstoreSigned` requirement, or its key cannot be loaded.
    #[error("sigstoreSigned requirement not satisfied for {image}")]
    SigstoreSigned {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: SigstoreError,
    },
}

/// One requirement.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRequirement")]
pub enum Requirement {
    /// Accept without checks.
    InsecureAcceptAnything,
    /// Refuse.
    Reject,
    /// A GPG simple signing signature by one of the keys.
    SignedBy {
        /// Always `GPGKeys`.
        key_type: String,
        /// A keyring file.
        key_path: Option<String>,
        /// Several keyring files.
        key_paths: Option<Vec<String>>,
        /// An inline keyring (base64).
        key_data: Option<String>,
        /// Which identity the signature must claim.
        signed_identity: Option<SignedIdentity>,
    },
    /// A sigstore (cosign) signature by the key.
    SigstoreSigned {
        /// A public key file.
        key_path: Option<String>,
        /// An inline public key (base64).
        key_data: Option<String>,
        /// Which identity the signature must claim.
        signed_identity: Option<SignedIdentity>,
    },
}

/// The JSON form of a requirement: every field any type may have; [`Requirement::try_from`]
/// takes exactly those its type allows (serde's tagged enums would let unit variants carry
/// unknown fields, and containers/image refuses them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequirement {
    #[serde(rename = "type")]
    kind: String,
    key_type: Option<String>,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    signed_identity: Option<SignedIdentity>,
}

/// The only `keyType` of `signedBy` that exists in practice.
const GPG_KEYS: &str = "GPGKeys";

impl TryFrom<RawRequirement> for Requirement {
    type Error = String;

    fn try_from(r: RawRequirement) -> Result<Self, String> {
        let no_keys = r.key_type.is_none()
            && r.key_path.is_none()
            && r.key_paths.is_none()
            && r.key_data.is_none()
            && r.signed_identity.is_none();
        let sources = [
            r.key_path.is_some(),
            r.key_paths.is_some(),
            r.key_data.is_some(),
        ]
        .into_iter()
        .filter(|x| *x)
        .count();
        match r.kind.as_str() {
            "insecureAcceptAnything" if no_keys => Ok(Self::InsecureAcceptAnything),
            "reject" if no_keys => Ok(Self::Reject),
            "insecureAcceptAnything" | "reject" => Err(format!("{} takes no fields", r.kind)),
            "signedBy" => {
                if r.key_type.as_deref() != Some(GPG_KEYS) {
                    return Err(format!("signedBy needs keyType {GPG_KEYS:?}"));
                }
                if sources != 1 {
                    return Err("signedBy needs exactly one of keyPath, keyPaths, keyData".into());
                }
                Ok(Self::SignedBy {
                    key_type: GPG_KEYS.into(),
                    key_path: r.key_path,
                    key_paths: r.key_paths,
                    key_data: r.key_data,
                    signed_identity: r.signed_identity,
                })
            }
            "sigstoreSigned" => {
                if r.key_type.is_some() || r.key_paths.is_some() || sources != 1 {
                    return Err("sigstoreSigned needs exactly one of keyPath, keyData".into());
                }
                Ok(Self::SigstoreSigned {
                    key_path: r.key_path,
                    key_data: r.key_data,
                    signed_identity: r.signed_identity,
                })
            }
            other => Err(format!(
                "unknown requirement type {:?}",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Vec<Requirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// A parsed signature policy, with where to find signatures.
#[derive(Debug)]
pub struct Policy {
    file: PolicyFile,
    lookaside: Lookaside,
}

impl Policy {
    /// Parses containers-policy.json. Without [`Policy::with_lookaside`], no simple-signing
    /// signature can be found, so `signedBy` refuses every image.
    pub fn from_json(json: &[u8]) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_slice(json).map_err(PolicyError::Malformed)?;
        validate_scope("default", &file.default)?;
        for (t, scopes) in &file.transports {
            for (scope, reqs) in scopes {
                validate_scope(&format!("{t}:{scope}"), reqs)?;
            }
        }
        Ok(Self {
            file,
            lookaside: Lookaside::new(LookasideConfig::default()),
        })
    }

    /// The same policy, reading simple-signing signatures from the locations in `config`
    /// (trusted configuration: from initdata or the key broker, never from the host).
    pub fn with_lookaside(mut self, config: LookasideConfig) -> Self {
        self.lookaside = Lookaside::new(config);
        self
    }

    /// The requirements for `docker` image `reference` (`host/repo[:tag][@digest]`, normalised
    /// first when it parses).
    pub fn requirements_for(&self, reference: &str) -> &[Requirement] {
        let Some(scopes) = self.file.transports.get("docker") else {
            return &self.file.default;
        };
        let normalised = DockerReference::parse_pulled(reference)
            .map_or_else(|_| reference.to_owned(), |r| r.to_string());
        for scope in docker_scopes(&normalised) {
            if let Some(r) = scopes.get(&scope) {
                return r;
            }
        }
        &self.file.default
    }

    /// Checks a resolved image against its scope's requirements, fetching signatures as
    /// needed. Runs before any layer is fetched.
    pub async fn check(
        &self,
        registry: &Registry,
        image: &ResolvedImage,
    ) -> Result<(), PolicyError> {
        let name = image.reference.as_str();
        let pulled = DockerReference::parse_pulled(name).map_err(PolicyError::Reference)?;
        // Fetched once, for all `signedBy` requirements of the scope.
        let mut signatures: Option<Vec<Vec<u8>>> = None;
        for req in self.requirements_for(name) {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(PolicyError::Rejected(name.to_owned())),
                Requirement::SignedBy {
                    key_path,
                    key_paths,
                    key_data,
                    signed_identity,
                    ..
                } => {
                    let keyring = GpgKeyring::from_requirement(
                        key_path.as_deref(),
                        key_paths.as_deref(),
                        key_data.as_deref(),
                    )
                    .map_err(|source| PolicyError::Keyring {
                        image: name.to_owned(),
                        source,
                    })?;
                    let sigs = match &signatures {
                        Some(s) => s,
                        None => signatures.insert(
                            self.lookaside
                                .signatures(
                                    &pulled,
                                    &image.signed_digest,
                                    &registry.options.tls_roots,
                                )
                                .await
                                .map_err(|source| PolicyError::Lookaside {
                                    image: name.to_owned(),
                                    source,
                                })?,
                        ),
                    };
                    let rule = signed_identity.clone().unwrap_or_default();
                    verify_simple_signing(&keyring, sigs, &image.signed_digest, &rule, &pulled)
                        .map_err(|source| PolicyError::SignedBy {
                            image: name.to_owned(),
                            source,
                        })?;
                }
                Requirement::SigstoreSigned {
                    key_path,
                    key_data,
                    signed_identity,
                } => {
                    check_sigstore_signed(
                        registry,
                        image,
                        key_path.as_deref(),
                        key_data.as_deref(),
                        signed_identity.as_ref(),
                    )
                    .await?;
                }
            }
        }
        tracing::info!(image = name, manifest = %image.manifest_digest, "signature policy accepted the image");
        Ok(())
    }
}

/// The `sigstoreSigned` requirement: cosign signatures stored as registry attachments, by the
/// key from `key_path` or `key_data`, claims checked with `signed_identity` (default
/// `matchRepoDigestOrExact`).
pub(crate) async fn check_sigstore_signed(
    registry: &Registry,
    image: &ResolvedImage,
    key_path: Option<&str>,
    key_data: Option<&str>,
    signed_identity: Option<&SignedIdentity>,
) -> Result<(), PolicyError> {
    let refused = |source| PolicyError::SigstoreSigned {
        image: image.reference.clone(),
        source,
    };
    let key = policy_public_key(key_path, key_data).map_err(refused)?;
    let rule = signed_identity.cloned().unwrap_or_default();
    verify_sigstore_signed(registry, image, std::slice::from_ref(&key), &rule)
        .await
        .map_err(refused)?;
    Ok(())
}

impl ImageVerifier for Policy {
    fn verify<'a>(&'a self, registry: &'a Registry, image: &'a ResolvedImage) -> VerifyFuture<'a> {
        Box::pin(async move {
            self.check(registry, image)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
}

/// A scope must list requirements, and their identity rules must be usable.
fn validate_scope(scope: &str, reqs: &[Requirement]) -> Result<(), PolicyError> {
    if reqs.is_empty() {
        return Err(PolicyError::EmptyScope(scope.to_owned()));
    }
    for req in reqs {
        if let Requirement::SignedBy {
            signed_identity: Some(rule),
            ..
        }
        | Requirement::SigstoreSigned {
            signed_identity: Some(rule),
            ..
        } = req
        {
            rule.validate().map_err(|source| PolicyError::Identity {
                scope: scope.to_owned(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Scopes to try for a docker reference, most specific first.
fn docker_scopes(reference: &str) -> Vec<String> {
    let mut out = vec![reference.to_owned()];
    // Repository without tag or digest.
    let no_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match no_digest[last_slash..].rfind(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    if repo != reference {
        out.push(repo.to_owned());
    }
    let mut ns = repo;
    while let Some(i) = ns.rfind('/') {
        ns = &ns[..i];
        out.push(ns.to_owned());
    }
    // `*.example.com` wildcards for the host, most specific first.
    let host = ns.split(':').next().unwrap_or(ns);
    let mut rest = host;
    while let Some(i) = rest.find('.') {
        rest = &rest[i + 1..];
        out.push(format!("*.{rest}"));
    }
    out.push(String::new());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_go_from_specific_to_general() {
        assert_eq!(
            docker_scopes("reg.example.com:5000/ns/app:v1"),
            vec![
                "reg.example.com:5000/ns/app:v1",
                "reg.example.com:5000/ns/app",
                "reg.example.com:5000/ns",
                "reg.example.com:5000",
                "*.example.com",
                "*.com",
                ""
            ]
        );
        let d = format!("127.0.0.1:5000/app@sha256:{}", "a".repeat(64));
        assert_eq!(docker_scopes(&d)[1], "127.0.0.1:5000/app");
    }

    #[test]
    fn most_specific_scope_wins() {
        let p = Policy::from_json(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "reg.io/team":[{"type":"insecureAcceptAnything"}],
                "reg.io/team/secret":[{"type":"reject"}],
                "*.internal":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        assert_eq!(
            p.requirements_for("reg.io/team/app:v1"),
            &[Requirement::InsecureAcceptAnything]
        );
        assert_eq!(
            p.requirements_for("reg.io/team/secret:v1"),
            &[Requirement::Reject]
        );
        assert_eq!(p.requirements_for("other.io/x:v1"), &[Requirement::Reject]);
        assert_eq!(
            p.requirements_for("a.b.internal/x:v1"),
            &[Requirement::InsecureAcceptAnything]
        );
    }

    #[test]
    fn scopes_match_the_normalised_reference() {
        let p = Policy::from_json(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "docker.io/library/busybox":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap();
        for r in [
            "busybox",
            "busybox:1.36",
            "docker.io/busybox",
            "index.docker.io/library/busybox",
        ] {
            assert_eq!(
                p.requirements_for(r),
                &[Requirement::InsecureAcceptAnything],
                "{r}"
            );
        }
        assert_eq!(p.requirements_for("busyboxx"), &[Requirement::Reject]);
    }

    #[test]
    fn requirements_are_parsed_strictly() {
        let bad = [
            r#"{"type":"reject","keyPath":"/k"}"#,
            r#"{"type":"insecureAcceptAnything","x":1}"#,
            r#"{"type":"signedBy","keyPath":"/k"}"#,
            r#"{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}"#,
            r#"{"type":"signedBy","keyType":"GPGKeys"}"#,
            r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","keyData":"eA=="}"#,
            r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","extra":1}"#,
            r#"{"type":"sigstoreSigned","keyType":"GPGKeys","keyPath":"/k"}"#,
            r#"{"type":"sigstoreSigned"}"#,
            r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"reg.io/a"}}"#,
        ];
        for req in bad {
            let json = format!(r#"{{"default":[{req}]}}"#);
            assert!(Policy::from_json(json.as_bytes()).is_err(), "{req}");
        }
        let p = Policy::from_json(
            br#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPaths":["/a","/b"]}]}"#,
        )
        .unwrap();
        assert!(matches!(
            &p.requirements_for("x/y:z")[0],
            Requirement::SignedBy { key_paths: Some(k), signed_identity: None, .. } if k.len() == 2
        ));
    }

    fn resolved(reference: &str) -> ResolvedImage {
        let manifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
            crate::Digest::of(b"{}")
        ))
        .unwrap();
        ResolvedImage {
            reference: reference.into(),
            registry: "reg.io".into(),
            repository: "team/app".into(),
            manifest_digest: crate::Digest::of(b"manifest"),
            signed_digest: crate::Digest::of(b"manifest"),
            manifest_bytes: b"manifest".to_vec(),
            manifest,
            config: serde_json::from_str(r#"{"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap(),
        }
    }

    fn check(p: &Policy, reference: &str) -> Result<(), PolicyError> {
        let registry = Registry::new(crate::RegistryOptions::default()).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(p.check(&registry, &resolved(reference)))
    }

    #[test]
    fn signed_by_refuses_without_keys_storage_or_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let policy = |key: &str| {
            Policy::from_json(
                format!(
                    r#"{{"default":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"{key}"}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        // The keyring is missing.
        let missing = dir.path().join("missing.gpg");
        assert!(matches!(
            check(
                &policy(&missing.display().to_string()),
                "reg.io/team/app:v1"
            ),
            Err(PolicyError::Keyring { .. })
        ));
        // A keyring that is not one.
        let junk = dir.path().join("junk.gpg");
        std::fs::write(&junk, b"junk").unwrap();
        assert!(matches!(
            check(&policy(&junk.display().to_string()), "reg.io/team/app:v1"),
            Err(PolicyError::Keyring { .. })
        ));
        // Reject wins even when listed after insecureAcceptAnything; bad references refuse.
        let p = Policy::from_json(
            br#"{"default":[{"type":"insecureAcceptAnything"},{"type":"reject"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            check(&p, "reg.io/team/app:v1"),
            Err(PolicyError::Rejected(_))
        ));
        let open =
            Policy::from_json(br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        check(&open, "reg.io/team/app:v1").unwrap();
        assert!(matches!(
            check(&open, "Reg.io/Team/App:v1"),
            Err(PolicyError::Reference(_))
        ));
        // sigstoreSigned with a key that cannot be read: refused.
        let sigstore =
            Policy::from_json(br#"{"default":[{"type":"sigstoreSigned","keyPath":"/k.pub"}]}"#)
                .unwrap();
        assert!(matches!(
            check(&sigstore, "reg.io/team/app:v1"),
            Err(PolicyError::SigstoreSigned {
                source: SigstoreError::KeyFile(..),
                ..
            })
        ));
    }

    #[test]
    fn malformed_and_empty_policies_are_refused() {
        assert!(matches!(
            Policy::from_json(b"{}"),
            Err(PolicyError::Malformed(_))
        ));
        assert!(matches!(
            Policy::from_json(br#"{"default":[]}"#),
            Err(PolicyError::EmptyScope(_))
        ));
        assert!(matches!(
            Policy::from_json(br#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"x":[]}}}"#),
            Err(PolicyError::EmptyScope(_))
        ));
        assert!(matches!(
            Policy::from_json(br#"{"default":[{"type":"acceptAll"}]}"#),
            Err(PolicyError::Malformed(_))
        ));
        let p = Policy::from_json(
            br#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k.gpg",
                "signedIdentity":{"type":"remapIdentity","prefix":"a.io","signedPrefix":"b.io"}}]}"#,
        )
        .unwrap();
        assert!(matches!(
            p.requirements_for("x/y:z")[0],
            Requirement::SignedBy { .. }
        ));
    }
}
