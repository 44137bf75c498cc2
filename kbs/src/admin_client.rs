//! A client for the admin API, for `tsuba kbs admin` and scripts: every call carries a fresh,
//! short-lived EdDSA admin token.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, KeypairBytes};
use p256::elliptic_curve::zeroize::Zeroizing;
use rand::RngCore;

use crate::admin::sign_admin_token;
use crate::broker::PolicyKind;
use crate::store::ResourcePath;

/// Lifetime of the admin tokens this client makes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Errors of admin calls.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The request could not be sent or the answer read.
    #[error("request to {url} failed")]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The broker refused the call.
    #[error("broker answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The problem body.
        body: String,
    },
    /// The answer is not what tsuba's broker returns for the call (what was expected, and a hint
    /// when another broker is the likely reason).
    #[error("broker answer is malformed: expected {0}")]
    Malformed(&'static str),
    /// The admin key is not a PKCS#8 Ed25519 key.
    #[error(
        "admin key is not a pkcs#8 ed25519 private key (make one with `tsuba kbs admin-keygen`)"
    )]
    Key(#[source] ed25519_dalek::pkcs8::Error),
    /// A reference value's name has characters a URL path segment cannot carry as they are.
    #[error("reference value name {0:?} is not letters, digits, '_', '-' and '.'")]
    Name(String),
    /// The client could not be built.
    #[error("admin client configuration is invalid")]
    Config(#[source] reqwest::Error),
}

/// A new administrator key pair as PEM: (private PKCS#8, public SPKI).
///
/// The private key is a PKCS#8 v1 `PrivateKeyInfo` (RFC 5208, RFC 8410), without the public key
/// that v2 (RFC 5958) may embed: OpenSSL 3.0 and Python's `cryptography` load only v1 Ed25519
/// keys, and operators sign admin tokens with those tools. [`AdminClient::new`] reads both.
pub fn generate_admin_key() -> Result<(Zeroizing<String>, String), AdminClientError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    // Zeroised on drop.
    let v1 = KeypairBytes {
        secret_key: *seed,
        public_key: None,
    };
    let private = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(AdminClientError::Key)?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|err| AdminClientError::Key(err.into()))?;
    Ok((private, public))
}

/// Talks to a broker's admin API.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    key: SigningKey,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("url", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for the broker at `url`, signing with the PKCS#8 PEM `key_pem` (v1, or v2 with
    /// the public key, which must then match the private key), trusting the
    /// PEM certificates in `ca_pem` for HTTPS.
    pub fn new(url: &str, key_pem: &str, ca_pem: Option<&[u8]>) -> Result<Self, AdminClientError> {
        let key = SigningKey::from_pkcs8_pem(key_pem).map_err(AdminClientError::Key)?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = ca_pem {
            for cert in
                reqwest::Certificate::from_pem_bundle(pem).map_err(AdminClientError::Config)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build().map_err(AdminClientError::Config)?,
            base: url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    fn bearer(&self) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!(
            "Bearer {}",
            sign_admin_token(&self.key, now, now + TOKEN_LIFETIME.as_secs())
        )
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, AdminClientError> {
        let url = format!("{}{path}", self.base);
        let transport = |source| AdminClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .request(method, &url)
            .header("authorization", self.bearer())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(AdminClientError::Refused {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(2000).collect(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Stores a resource.
    pub async fn set_resource(
        &self,
        path: &ResourcePath,
        bytes: Vec<u8>,
    ) -> Result<(), AdminClientError> {
        let path = format!("/kbs/v0/resource/{path}");
        self.call(
            reqwest::Method::POST,
            &path,
            "application/octet-stream",
            bytes,
        )
        .await
        .map(drop)
    }

    /// Deletes a resource (Trustee's `DELETE` at its path).
    pub async fn delete_resource(&self, path: &ResourcePath) -> Result<(), AdminClientError> {
        let path = format!("/kbs/v0/resource/{path}");
        self.call(
            reqwest::Method::DELETE,
            &path,
            "application/octet-stream",
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// Lists resource paths (tsuba's broker only: Trustee's has no listing).
    pub async fn list_resources(&self) -> Result<Vec<String>, AdminClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                "/kbs/v0/admin/resources",
                "application/json",
                Vec::new(),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|_| AdminClientError::Malformed(RESOURCE_LIST))
    }

    /// Replaces a policy, in the envelope both brokers take: Trustee's attestation policy is
    /// the one with id `default_cpu` (the CPU's, which its broker evaluates).
    pub async fn set_policy(&self, kind: PolicyKind, rego: &str) -> Result<(), AdminClientError> {
        let policy = URL_SAFE_NO_PAD.encode(rego);
        let body = match kind {
            PolicyKind::Attestation => serde_json::json!({
                "type": "rego", "policy_id": "default_cpu", "policy": policy,
            }),
            PolicyKind::Resource => serde_json::json!({"policy": policy}),
        }
        .to_string();
        self.call(
            reqwest::Method::POST,
            policy_path(kind),
            "application/json",
            body.into_bytes(),
        )
        .await
        .map(drop)
    }

    /// Forgets a policy, so the broker's built-in default applies again (tsuba's broker only).
    pub async fn delete_policy(&self, kind: PolicyKind) -> Result<(), AdminClientError> {
        self.call(
            reqwest::Method::DELETE,
            policy_path(kind),
            "application/json",
            Vec::new(),
        )
        .await
        .map(drop)
    }

    /// Reads a policy (tsuba's broker only: Trustee's gives no policy text back).
    pub async fn policy(&self, kind: PolicyKind) -> Result<String, AdminClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                policy_path(kind),
                "application/json",
                Vec::new(),
            )
            .await?;
        let malformed = || AdminClientError::Malformed(POLICY_TEXT);
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| malformed())?;
        let encoded = value["policy"].as_str().ok_or_else(malformed)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed())?;
        String::from_utf8(bytes).map_err(|_| malformed())
    }

    /// Sets one reference value's values, leaving the others, as a Trustee RVPS `sample`
    /// message (both brokers take it).
    pub async fn set_reference_value(
        &self,
        name: &str,
        values: &[String],
    ) -> Result<(), AdminClientError> {
        use base64::engine::general_purpose::STANDARD;
        let payload = serde_json::json!({ name: values }).to_string();
        let body = serde_json::json!({
            "version": "0.1.0", "type": "sample", "payload": STANDARD.encode(payload),
        })
        .to_string();
        self.call(
            reqwest::Method::POST,
            "/kbs/v0/reference-value",
            "application/json",
            body.into_bytes(),
        )
        .await
        .map(drop)
    }

    /// One reference value's values (both brokers).
    pub async fn reference_value(&self, name: &str) -> Result<Vec<String>, AdminClientError> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || !name.chars().all(plain) {
            return Err(AdminClientError::Name(name.chars().take(100).collect()));
        }
        let body = self
            .call(
                reqwest::Method::GET,
                &format!("/kbs/v0/reference-value/{name}"),
                "application/json",
                Vec::new(),
            )
            .await?;
        // Trustee answers with the stored value as its RVPS holds it: a list, or a single value.
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Array(items)) => Ok(items.iter().map(value_text).collect()),
            Ok(single) => Ok(vec![value_text(&single)]),
            Err(_) => Err(AdminClientError::Malformed("a reference value as JSON")),
        }
    }

    /// Replaces the reference values (tsuba's broker only).
    pub async fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), AdminClientError> {
        // A map of strings to lists of strings always serializes.
        let body = serde_json::to_vec(values).unwrap_or_default();
        self.call(
            reqwest::Method::POST,
            "/kbs/v0/reference-values",
            "application/json",
            body,
        )
        .await
        .map(drop)
    }

    /// Reads the reference values (tsuba's broker only).
    pub async fn reference_values(
        &self,
    ) -> Result<BTreeMap<String, Vec<String>>, AdminClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                "/kbs/v0/reference-values",
                "application/json",
                Vec::new(),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|_| AdminClientError::Malformed(REFERENCE_TABLE))
    }
}

/// What `list-resources` expects back.
const RESOURCE_LIST: &str = "a JSON list of resource paths (only tsuba's broker lists resources)";
/// What `get-policy` expects back.
const POLICY_TEXT: &str = "{\"policy\": <base64url Rego>} (only tsuba's broker gives a policy \
                           back; Trustee's answers with the ids of its policies)";
/// What `get-reference-values` expects back.
const REFERENCE_TABLE: &str = "the reference-value table as JSON (only tsuba's broker reads the whole table; use \
     get-reference-value NAME with Trustee's)";

/// A reference value as text: a string as itself, anything else as its JSON.
fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn policy_path(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Attestation => "/kbs/v0/attestation-policy",
        PolicyKind::Resource => "/kbs/v0/resource-policy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminAuth;

    #[test]
    fn generated_keys_work_with_the_broker_check() {
        let (private, public) = generate_admin_key().unwrap();
        let client = AdminClient::new("http://127.0.0.1:1", &private, None).unwrap();
        let auth = AdminAuth::from_public_key_pem(&public).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        auth.check(Some(&client.bearer()), now).unwrap();
        assert!(AdminClient::new("http://x", &public, None).is_err());
    }

    /// The PKCS#8 version (the `pkcs8` crate, as re-exported by `p256`) and the embedded public
    /// key, if any.
    fn key_info(pem: &str) -> (p256::pkcs8::Version, Option<Vec<u8>>) {
        let (label, der) = ed25519_dalek::pkcs8::SecretDocument::from_pem(pem).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let info = ed25519_dalek::pkcs8::PrivateKeyInfo::try_from(der.as_bytes()).unwrap();
        (info.version(), info.public_key.map(<[u8]>::to_vec))
    }

    #[test]
    fn generated_private_key_is_pkcs8_v1_without_the_public_key() {
        let (private, _) = generate_admin_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(key_info(&private), (p256::pkcs8::Version::V1, None));
        // RFC 8410's example layout: 48 bytes, seed at the end.
        let (_, der) = ed25519_dalek::pkcs8::SecretDocument::from_pem(&private).unwrap();
        assert_eq!(der.as_bytes().len(), 48);
        assert_eq!(
            der.as_bytes()[..16],
            hex::decode("302e020100300506032b657004220420").unwrap()[..]
        );
    }

    /// Tokens signed with `pem` pass the broker's check against `public`.
    fn signs_for(pem: &str, public: &str) -> bool {
        let client = AdminClient::new("http://127.0.0.1:1", pem, None).unwrap();
        let auth = AdminAuth::from_public_key_pem(public).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        auth.check(Some(&client.bearer()), now).is_ok()
    }

    #[test]
    fn v1_and_v2_private_keys_both_load_and_sign() {
        let (v1, public) = generate_admin_key().unwrap();
        assert!(signs_for(&v1, &public));
        // The same key in v2 form (public key embedded), as earlier releases wrote it.
        let key = SigningKey::from_pkcs8_pem(&v1).unwrap();
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let (version, embedded) = key_info(&v2);
        assert_eq!(version, p256::pkcs8::Version::V2);
        assert_eq!(embedded, Some(key.verifying_key().to_bytes().to_vec()));
        assert!(signs_for(&v2, &public));
        // A key signs only for its own public key.
        let (other, other_public) = generate_admin_key().unwrap();
        assert!(!signs_for(&other, &public));
        assert!(signs_for(&other, &other_public));
    }

    #[test]
    fn v2_key_whose_public_key_does_not_match_is_refused() {
        let (v1, _) = generate_admin_key().unwrap();
        let (other, _) = generate_admin_key().unwrap();
        let other = SigningKey::from_pkcs8_pem(&other).unwrap();
        let mismatched = KeypairBytes {
            secret_key: SigningKey::from_pkcs8_pem(&v1).unwrap().to_bytes(),
            public_key: Some(ed25519_dalek::pkcs8::PublicKeyBytes(
                other.verifying_key().to_bytes(),
            )),
        }
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
        assert!(matches!(
            AdminClient::new("http://x", &mismatched, None),
            Err(AdminClientError::Key(_))
        ));
    }
}
