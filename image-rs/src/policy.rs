//! The signature policy, with containers-policy.json semantics (`containers-policy.json(5)`):
//! for the `docker` transport the most specific scope wins (the full reference, then the
//! repository, then each parent namespace, then the registry host, then `*.` wildcard domains,
//! then the transport's `""` default, then the global `default`), and *every* requirement of
//! the chosen scope must be satisfied.
//!
//! Implemented requirements: `insecureAcceptAnything` and `reject`. `signedBy` and
//! `sigstoreSigned` parse (with their `signedIdentity` rules) but are refused at check time
//! until signature verification lands here: a policy asking for signatures never passes an
//! unsigned image.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pull::{ImageVerifier, Registry, ResolvedImage, VerifyFuture};
use crate::signature::SignedIdentity;

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
        source: crate::signature::IdentityError,
    },
    /// A `reject` requirement matched.
    #[error("policy rejects {0}")]
    Rejected(String),
    /// A signature requirement that this runtime cannot check yet.
    #[error("policy requires {kind} for {image}, which this runtime does not verify yet")]
    Unverifiable {
        /// The requirement type.
        kind: &'static str,
        /// The image.
        image: String,
    },
}

/// One requirement.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Requirement {
    /// Accept without checks.
    InsecureAcceptAnything,
    /// Refuse.
    Reject,
    /// A GPG simple signing signature by one of the keys.
    #[serde(rename_all = "camelCase")]
    SignedBy {
        /// Always `GPGKeys`.
        key_type: String,
        /// A keyring file.
        #[serde(default)]
        key_path: Option<String>,
        /// Several keyring files.
        #[serde(default)]
        key_paths: Option<Vec<String>>,
        /// An inline keyring (base64).
        #[serde(default)]
        key_data: Option<String>,
        /// Which identity the signature must claim.
        #[serde(default)]
        signed_identity: Option<SignedIdentity>,
    },
    /// A sigstore (cosign) signature by the key.
    #[serde(rename_all = "camelCase")]
    SigstoreSigned {
        /// A public key file.
        #[serde(default)]
        key_path: Option<String>,
        /// An inline public key (base64).
        #[serde(default)]
        key_data: Option<String>,
        /// Which identity the signature must claim.
        #[serde(default)]
        signed_identity: Option<SignedIdentity>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default: Vec<Requirement>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// A parsed signature policy.
#[derive(Debug)]
pub struct Policy {
    file: PolicyFile,
}

impl Policy {
    /// Parses containers-policy.json.
    pub fn from_json(json: &[u8]) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_json::from_slice(json).map_err(PolicyError::Malformed)?;
        validate_scope("default", &file.default)?;
        for (t, scopes) in &file.transports {
            for (scope, reqs) in scopes {
                validate_scope(&format!("{t}:{scope}"), reqs)?;
            }
        }
        Ok(Self { file })
    }

    /// The requirements for `docker` image `reference` (`host/repo[:tag][@digest]`).
    pub fn requirements_for(&self, reference: &str) -> &[Requirement] {
        let Some(scopes) = self.file.transports.get("docker") else {
            return &self.file.default;
        };
        for scope in docker_scopes(reference) {
            if let Some(r) = scopes.get(&scope) {
                return r;
            }
        }
        &self.file.default
    }

    /// Checks a resolved image against its scope's requirements.
    pub fn check(&self, image: &ResolvedImage) -> Result<(), PolicyError> {
        let name = image.reference.as_str();
        for req in self.requirements_for(name) {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(PolicyError::Rejected(name.to_owned())),
                Requirement::SignedBy { .. } => {
                    return Err(PolicyError::Unverifiable {
                        kind: "signedBy",
                        image: name.to_owned(),
                    });
                }
                Requirement::SigstoreSigned { .. } => {
                    return Err(PolicyError::Unverifiable {
                        kind: "sigstoreSigned",
                        image: name.to_owned(),
                    });
                }
            }
        }
        tracing::info!(image = name, manifest = %image.manifest_digest, "signature policy accepted the image");
        Ok(())
    }
}

impl ImageVerifier for Policy {
    fn verify<'a>(&'a self, _registry: &'a Registry, image: &'a ResolvedImage) -> VerifyFuture<'a> {
        Box::pin(async move {
            self.check(image)
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
