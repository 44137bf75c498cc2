//! Docker references and the `signedIdentity` rules of containers-policy.json(5): which
//! `docker-reference` a signature may claim for the image that was pulled.
//!
//! References are normalised the way the docker/distribution reference library does it
//! (`ParseNormalizedNamed`): a first component without `.` or `:` that is not `localhost` (and
//! is lowercase) is not a registry, so the image lives on `docker.io`; single-component
//! repositories on `docker.io` are under `library/`; `index.docker.io` is `docker.io`. The pulled
//! reference additionally gets the default tag `latest` when it has neither tag nor digest; a
//! signed reference never gets a default (it must say exactly what it signs).

use std::fmt;

use serde::Deserialize;

/// The registry that unqualified names refer to.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Its legacy spelling, normalised to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of single-component names on [`DEFAULT_DOMAIN`].
const OFFICIAL_NAMESPACE: &str = "library/";
/// The tag a pulled name-only reference gets.
const DEFAULT_TAG: &str = "latest";
/// Longest repository name (domain and path) accepted.
const MAX_NAME_LEN: usize = 255;
/// Longest reference string accepted at all (name, tag and digest).
const MAX_REFERENCE_LEN: usize = 1024;

/// Errors from parsing references or applying identity rules.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A reference string does not follow the docker reference grammar.
    #[error("invalid docker reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference (truncated).
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `signedIdentity` rule in the policy is unusable.
    #[error("invalid signedIdentity rule: {0}")]
    InvalidRule(String),
    /// The signature's claimed identity does not satisfy the rule.
    #[error("signed identity {signed:?} does not satisfy {rule} for {pulled}")]
    Mismatch {
        /// The rule's name.
        rule: &'static str,
        /// The identity the signature claims (truncated).
        signed: String,
        /// The pulled reference.
        pulled: String,
    },
}

/// A parsed, normalised docker reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl DockerReference {
    /// Parses `s` like docker's `ParseNormalizedNamed`: short names are expanded to
    /// `docker.io[/library]/…`; no default tag is added.
    pub fn parse_normalized(s: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::InvalidReference {
            reference: truncate(s),
            reason,
        };
        if s.len() > MAX_REFERENCE_LEN {
            return Err(bad("too long"));
        }
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(
                "a 64-character hex string is an image id, not a reference",
            ));
        }
        let (domain, remainder) = split_domain(s);
        let (rest, digest) = match remainder.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (remainder, None),
        };
        // A tag's `:` can only follow the last `/` (the domain was split off already).
        let (path, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path.to_owned()
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !valid_domain(&domain) {
            return Err(bad("invalid registry host"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository path"));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad("invalid tag"));
        }
        if let Some(d) = digest
            && !valid_digest(d)
        {
            return Err(bad("invalid digest"));
        }
        Ok(Self {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// Parses `s`, which must already be in fully expanded form (docker's `ParseNamed`).
    pub fn parse_expanded(s: &str) -> Result<Self, IdentityError> {
        let r = Self::parse_normalized(s)?;
        if r.to_string() != s {
            return Err(IdentityError::InvalidReference {
                reference: truncate(s),
                reason: "not in fully expanded form (host/namespace/repository)",
            });
        }
        Ok(r)
    }

    /// Parses the reference an image is pulled by: normalised, and with tag `latest` when it
    /// has neither tag nor digest (what a pull of a bare name fetches).
    pub fn parse_pulled(s: &str) -> Result<Self, IdentityError> {
        let mut r = Self::parse_normalized(s)?;
        if r.is_name_only() {
            r.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(r)
    }

    /// The registry host (with port, if any).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (no domain, tag or digest).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`algorithm:hex`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The repository name, `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Neither tag nor digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl fmt::Display for DockerReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits the registry host off, with docker's defaults.
fn split_domain(s: &str) -> (String, &str) {
    let (domain, remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, s),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    (domain.to_owned(), remainder)
}

/// `host[:port]`, host a DNS name, IPv4 address or bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            a => match a.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b.first().is_some_and(u8::is_ascii_alphanumeric)
                && b.last().is_some_and(u8::is_ascii_alphanumeric)
        })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !b.first().is_some_and(alnum) || !b.last().is_some_and(alnum) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        // A separator: `.`, `_`, `__` or a run of `-`, followed by an alphanumeric.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || !b.get(i).is_some_and(alnum) {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    let b = t.as_bytes();
    b.len() <= 128
        && b.first().is_some_and(word)
        && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
}

/// `algorithm:hex`, algorithm components `[A-Za-z][A-Za-z0-9]*` joined by `+._-`, at least 32
/// hex digits.
fn valid_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && alg.split(['+', '.', '_', '-']).all(|c| {
            c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// A `signedIdentity` rule: which identity a signature may claim for the pulled image.
/// When a requirement has none, [`SignedIdentity::MatchRepoDigestOrExact`] applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawIdentity")]
pub enum SignedIdentity {
    /// The signed reference equals the pulled one (both with a tag or digest).
    MatchExact,
    /// Pulled by digest: the same repository; pulled by tag: the same reference.
    #[default]
    MatchRepoDigestOrExact,
    /// The same repository, whatever the tag or digest.
    MatchRepository,
    /// The signed reference is exactly this one (which has a tag or digest).
    ExactReference {
        /// The reference.
        docker_reference: String,
    },
    /// The signed repository is this one.
    ExactRepository {
        /// The repository.
        docker_repository: String,
    },
    /// Like `matchRepoDigestOrExact` after rewriting the pulled reference's `prefix` into
    /// `signedPrefix` (for mirrors).
    RemapIdentity {
        /// Prefix of the pulled reference (`host[:port]`, or a fully expanded namespace or
        /// repository).
        prefix: String,
        /// What it becomes in the signature.
        signed_prefix: String,
    },
}

/// The JSON form: every field a rule may have; [`SignedIdentity::try_from`] takes exactly the
/// ones its type uses (serde's tagged enums would let unit variants carry unknown fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    #[serde(rename = "type")]
    kind: String,
    docker_reference: Option<String>,
    docker_repository: Option<String>,
    prefix: Option<String>,
    signed_prefix: Option<String>,
}

impl TryFrom<RawIdentity> for SignedIdentity {
    type Error = String;

    fn try_from(r: RawIdentity) -> Result<Self, String> {
        let fields = (
            r.docker_reference,
            r.docker_repository,
            r.prefix,
            r.signed_prefix,
        );
        let rule = match (r.kind.as_str(), fields) {
            ("matchExact", (None, None, None, None)) => Self::MatchExact,
            ("matchRepoDigestOrExact", (None, None, None, None)) => Self::MatchRepoDigestOrExact,
            ("matchRepository", (None, None, None, None)) => Self::MatchRepository,
            ("exactReference", (Some(docker_reference), None, None, None)) => {
                Self::ExactReference { docker_reference }
            }
            ("exactRepository", (None, Some(docker_repository), None, None)) => {
                Self::ExactRepository { docker_repository }
            }
            ("remapIdentity", (None, None, Some(prefix), Some(signed_prefix))) => {
                Self::RemapIdentity {
                    prefix,
                    signed_prefix,
                }
            }
            (kind, _) => {
                return Err(format!(
                    "signedIdentity {:?}: unknown type, or fields missing or not allowed for it",
                    kind.chars().take(40).collect::<String>()
                ));
            }
        };
        Ok(rule)
    }
}

impl SignedIdentity {
    /// The rule's name in containers-policy.json.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MatchExact => "matchExact",
            Self::MatchRepoDigestOrExact => "matchRepoDigestOrExact",
            Self::MatchRepository => "matchRepository",
            Self::ExactReference { .. } => "exactReference",
            Self::ExactRepository { .. } => "exactRepository",
            Self::RemapIdentity { .. } => "remapIdentity",
        }
    }

    /// Checks the rule's own parameters (done when the policy is loaded).
    pub fn validate(&self) -> Result<(), IdentityError> {
        match self {
            Self::ExactReference { docker_reference } => {
                let r = DockerReference::parse_normalized(docker_reference)
                    .map_err(|e| IdentityError::InvalidRule(e.to_string()))?;
                if r.is_name_only() {
                    return Err(IdentityError::InvalidRule(format!(
                        "exactReference {docker_reference:?} has neither tag nor digest"
                    )));
                }
            }
            Self::ExactRepository { docker_repository } => {
                DockerReference::parse_normalized(docker_repository)
                    .map_err(|e| IdentityError::InvalidRule(e.to_string()))?;
            }
            Self::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                for p in [prefix, signed_prefix] {
                    if !valid_remap_prefix(p) {
                        return Err(IdentityError::InvalidRule(format!(
                            "remapIdentity prefix {:?} is not host[:port][/namespace…]",
                            truncate(p)
                        )));
                    }
                }
            }
            Self::MatchExact | Self::MatchRepoDigestOrExact | Self::MatchRepository => {}
        }
        Ok(())
    }

    /// Whether a signature claiming `signed` (its `docker-reference`) is acceptable for the
    /// image pulled as `pulled` (from [`DockerReference::parse_pulled`]).
    pub fn check(&self, pulled: &DockerReference, signed: &str) -> Result<(), IdentityError> {
        let mismatch = || IdentityError::Mismatch {
            rule: self.name(),
            signed: truncate(signed),
            pulled: pulled.to_string(),
        };
        let signed_ref = DockerReference::parse_normalized(signed).map_err(|_| mismatch())?;
        let ok = match self {
            Self::MatchExact => {
                !pulled.is_name_only()
                    && !signed_ref.is_name_only()
                    && signed_ref.to_string() == pulled.to_string()
            }
            Self::MatchRepoDigestOrExact => repo_digest_or_exact(pulled, &signed_ref),
            Self::MatchRepository => signed_ref.name() == pulled.name(),
            Self::ExactReference { docker_reference } => {
                match DockerReference::parse_normalized(docker_reference) {
                    Ok(want) => {
                        !want.is_name_only()
                            && !signed_ref.is_name_only()
                            && want.to_string() == signed_ref.to_string()
                    }
                    Err(_) => false,
                }
            }
            Self::ExactRepository { docker_repository } => {
                DockerReference::parse_normalized(docker_repository)
                    .is_ok_and(|want| want.name() == signed_ref.name())
            }
            Self::RemapIdentity {
                prefix,
                signed_prefix,
            } => match remap(pulled, prefix, signed_prefix) {
                Some(remapped) => repo_digest_or_exact(&remapped, &signed_ref),
                None => false,
            },
        };
        if ok { Ok(()) } else { Err(mismatch()) }
    }
}

/// `matchRepoDigestOrExact` on parsed references.
fn repo_digest_or_exact(intended: &DockerReference, signed: &DockerReference) -> bool {
    if signed.is_name_only() {
        return false;
    }
    if intended.tag.is_some() {
        // Tagged (possibly also with a digest): the whole reference must be what was signed.
        signed.to_string() == intended.to_string()
    } else if intended.digest.is_some() {
        // By digest: the manifest digest is checked against the signature separately.
        signed.name() == intended.name()
    } else {
        false
    }
}

/// A valid `remapIdentity` prefix: a registry host, or a fully expanded name without tag or
/// digest.
fn valid_remap_prefix(p: &str) -> bool {
    if !p.contains('/') {
        return valid_domain(p) && !p.is_empty();
    }
    DockerReference::parse_expanded(p).is_ok_and(|r| r.is_name_only())
}

/// Rewrites `pulled`'s name from `prefix` to `signed_prefix` when the name is `prefix` or is
/// below it (at a `/`). `None` when the rewritten reference does not parse.
fn remap(pulled: &DockerReference, prefix: &str, signed_prefix: &str) -> Option<DockerReference> {
    let name = pulled.name();
    let matches = match name.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    };
    if !matches {
        return Some(pulled.clone());
    }
    let full = pulled.to_string();
    let rewritten = format!("{signed_prefix}{}", &full[prefix.len()..]);
    DockerReference::parse_expanded(&rewritten).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn pulled(s: &str) -> DockerReference {
        DockerReference::parse_pulled(s).unwrap()
    }

    fn ok(rule: &SignedIdentity, p: &str, signed: &str) -> bool {
        rule.check(&pulled(p), signed).is_ok()
    }

    #[test]
    fn normalisation_follows_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox",
            ),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("localhost/app", "localhost/app"),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
        ];
        for (input, want) in cases {
            assert_eq!(
                DockerReference::parse_normalized(input)
                    .unwrap()
                    .to_string(),
                want,
                "{input}"
            );
        }
        let r = DockerReference::parse_normalized(&format!("quay.io/ns/app:v1@{D}")).unwrap();
        assert_eq!(r.domain(), "quay.io");
        assert_eq!(r.path(), "ns/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.name(), "quay.io/ns/app");
        // "Registry-looking" first components with uppercase are hosts, not paths.
        assert_eq!(
            DockerReference::parse_normalized("Reg/app")
                .unwrap()
                .domain(),
            "Reg"
        );
        assert_eq!(
            DockerReference::parse_normalized("[::1]:5000/app")
                .unwrap()
                .domain(),
            "[::1]:5000"
        );
    }

    #[test]
    fn pulled_name_gets_latest_signed_does_not() {
        assert_eq!(
            pulled("busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(pulled(&format!("busybox@{D}")).tag(), None);
        assert!(
            DockerReference::parse_normalized("busybox")
                .unwrap()
                .is_name_only()
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "a//b",
            "a/b/",
            "/a",
            "a:b:c",
            "app:",
            "app:-tag",
            "app@sha256:abc",
            "app@sha256",
            "app@1sha:0123456789abcdef0123456789abcdef",
            "reg.io:port/app",
            "-reg.io/app",
            "a..b",
            "a-",
            "a___b",
            "[::1/app",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(
                DockerReference::parse_normalized(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
        let long = format!("reg.io/{}", "a".repeat(250));
        assert!(DockerReference::parse_normalized(&long).is_err());
        let tag = format!("app:{}", "t".repeat(129));
        assert!(DockerReference::parse_normalized(&tag).is_err());
        assert!(DockerReference::parse_normalized("a_b/c__d/e--f/g.h").is_ok());
        assert!(DockerReference::parse_expanded("busybox").is_err());
        assert!(DockerReference::parse_expanded("docker.io/library/busybox").is_ok());
    }

    #[test]
    fn match_exact() {
        let r = SignedIdentity::MatchExact;
        assert!(ok(&r, "reg.io/a:v1", "reg.io/a:v1"));
        assert!(ok(&r, "busybox", "docker.io/library/busybox:latest"));
        assert!(ok(&r, "busybox:latest", "busybox:latest"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/a:v2"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/a"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/b:v1"));
        assert!(!ok(&r, &format!("reg.io/a@{D}"), "reg.io/a:v1"));
        assert!(ok(&r, &format!("reg.io/a@{D}"), &format!("reg.io/a@{D}")));
        assert!(!ok(&r, "reg.io/a:v1", "not a reference"));
    }

    #[test]
    fn match_repo_digest_or_exact() {
        let r = SignedIdentity::default();
        assert_eq!(r, SignedIdentity::MatchRepoDigestOrExact);
        // By tag: exact.
        assert!(ok(&r, "reg.io/a:v1", "reg.io/a:v1"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/a:v2"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/other:v1"));
        // By digest: same repository, any tag or digest in the signature.
        let by_digest = format!("reg.io/a@{D}");
        assert!(ok(&r, &by_digest, "reg.io/a:v1"));
        assert!(ok(&r, &by_digest, &by_digest));
        assert!(!ok(&r, &by_digest, "reg.io/b:v1"));
        // A signature never names a bare repository.
        assert!(!ok(&r, &by_digest, "reg.io/a"));
    }

    #[test]
    fn match_repository() {
        let r = SignedIdentity::MatchRepository;
        assert!(ok(&r, "reg.io/a:v1", "reg.io/a:v9"));
        assert!(ok(&r, "reg.io/a:v1", "reg.io/a"));
        assert!(ok(&r, "library/busybox:1", "busybox:2"));
        assert!(!ok(&r, "reg.io/a:v1", "reg.io/a/b:v1"));
        assert!(!ok(&r, "reg.io/a:v1", "other.io/a:v1"));
    }

    #[test]
    fn exact_reference() {
        let r = SignedIdentity::ExactReference {
            docker_reference: "reg.io/release/a:v1".into(),
        };
        r.validate().unwrap();
        // Whatever was pulled.
        assert!(ok(&r, "mirror.io/x:y", "reg.io/release/a:v1"));
        assert!(!ok(&r, "mirror.io/x:y", "reg.io/release/a:v2"));
        assert!(!ok(&r, "reg.io/release/a:v1", "reg.io/release/a"));
        let bare = SignedIdentity::ExactReference {
            docker_reference: "reg.io/release/a".into(),
        };
        assert!(bare.validate().is_err());
        assert!(!ok(&bare, "reg.io/release/a:v1", "reg.io/release/a"));
    }

    #[test]
    fn exact_repository() {
        let r = SignedIdentity::ExactRepository {
            docker_repository: "reg.io/release/a".into(),
        };
        r.validate().unwrap();
        assert!(ok(&r, "mirror.io/x:y", "reg.io/release/a:v7"));
        assert!(ok(&r, "mirror.io/x:y", "reg.io/release/a"));
        assert!(!ok(&r, "reg.io/release/a:v1", "reg.io/release/b:v1"));
        assert!(!ok(&r, "reg.io/release/a:v1", "reg.io/release/a/sub:v1"));
        assert!(
            SignedIdentity::ExactRepository {
                docker_repository: "Bad Name".into()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn remap_identity() {
        let r = SignedIdentity::RemapIdentity {
            prefix: "mirror.local/ns".into(),
            signed_prefix: "reg.io/team".into(),
        };
        r.validate().unwrap();
        assert!(ok(&r, "mirror.local/ns/app:v1", "reg.io/team/app:v1"));
        assert!(!ok(&r, "mirror.local/ns/app:v1", "reg.io/team/app:v2"));
        assert!(!ok(&r, "mirror.local/ns/app:v1", "mirror.local/ns/app:v1"));
        // By digest: repository only.
        assert!(ok(
            &r,
            &format!("mirror.local/ns/app@{D}"),
            "reg.io/team/app:v3"
        ));
        // The prefix matches only at a path boundary; otherwise no rewrite happens.
        assert!(!ok(&r, "mirror.local/nsx/app:v1", "reg.io/teamx/app:v1"));
        assert!(ok(&r, "mirror.local/nsx/app:v1", "mirror.local/nsx/app:v1"));
        // Whole-host remap.
        let host = SignedIdentity::RemapIdentity {
            prefix: "127.0.0.1:5000".into(),
            signed_prefix: "docker.io".into(),
        };
        host.validate().unwrap();
        assert!(ok(&host, "127.0.0.1:5000/library/busybox:1", "busybox:1"));
        // A rewrite into an invalid reference never matches.
        let broken = SignedIdentity::RemapIdentity {
            prefix: "mirror.local/ns".into(),
            signed_prefix: "Reg.io/Team".into(),
        };
        assert!(broken.validate().is_err());
        assert!(!ok(&broken, "mirror.local/ns/app:v1", "Reg.io/Team/app:v1"));
        for bad in ["reg.io/a:v1", "*.reg.io", "", "reg.io/"] {
            let r = SignedIdentity::RemapIdentity {
                prefix: bad.into(),
                signed_prefix: "reg.io".into(),
            };
            assert!(r.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules_parse_from_policy_json() {
        let r: SignedIdentity = serde_json::from_str(
            r#"{"type":"remapIdentity","prefix":"a.io","signedPrefix":"b.io"}"#,
        )
        .unwrap();
        assert_eq!(r.name(), "remapIdentity");
        assert!(serde_json::from_str::<SignedIdentity>(r#"{"type":"matchExact","x":1}"#).is_err());
        assert!(serde_json::from_str::<SignedIdentity>(r#"{"type":"matchAll"}"#).is_err());
        assert!(serde_json::from_str::<SignedIdentity>(r#"{"type":"exactReference"}"#).is_err());
        assert!(
            serde_json::from_str::<SignedIdentity>(
                r#"{"type":"exactRepository","dockerReference":"a.io/b:c"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<SignedIdentity>(r#"{"type":"remapIdentity","prefix":"a.io"}"#)
                .is_err()
        );
        assert_eq!(
            serde_json::from_str::<SignedIdentity>(
                r#"{"type":"exactRepository","dockerRepository":"a.io/b"}"#
            )
            .unwrap(),
            SignedIdentity::ExactRepository {
                docker_repository: "a.io/b".into()
            }
        );
    }

    #[test]
    fn mismatch_error_names_rule_and_references() {
        let e = SignedIdentity::MatchExact
            .check(&pulled("reg.io/a:v1"), "reg.io/b:v1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("matchExact") && e.contains("reg.io/b:v1") && e.contains("reg.io/a:v1"));
    }
}
