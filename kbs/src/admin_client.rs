//! A client for the admin API, for `tsuba kbs admin` and scripts: every call carries a fresh,
//! short-lived EdDSA admin token.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
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
    /// The answer is not what the API returns.
    #[error("broker answer is malformed")]
    Malformed,
    /// The admin key is not a PKCS#8 Ed25519 key.
    #[error("admin key is not a pkcs#8 ed25519 private key")]
    Key(#[source] ed25519_dalek::pkcs8::Error),
    /// The client could not be built.
    #[error("admin client configuration is invalid")]
    Config(#[source] reqwest::Error),
}

/// A new administrator key pair as PEM: (private PKCS#8, public SPKI).
pub fn generate_admin_key() -> Result<(Zeroizing<String>, String), AdminClientError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let key = SigningKey::from_bytes(&seed);
    let private = key
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
    /// A client for the broker at `url`, signing with the PKCS#8 PEM `key_pem`, trusting the
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

    /// Lists resource paths.
    pub async fn list_resources(&self) -> Result<Vec<String>, AdminClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                "/kbs/v0/admin/resources",
                "application/json",
                Vec::new(),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|_| AdminClientError::Malformed)
    }

    /// Replaces a policy.
    pub async fn set_policy(&self, kind: PolicyKind, rego: &str) -> Result<(), AdminClientError> {
        let body = serde_json::json!({"policy": URL_SAFE_NO_PAD.encode(rego)}).to_string();
        self.call(
            reqwest::Method::POST,
            policy_path(kind),
            "application/json",
            body.into_bytes(),
        )
        .await
        .map(drop)
    }

    /// Reads a policy.
    pub async fn policy(&self, kind: PolicyKind) -> Result<String, AdminClientError> {
        let body = self
            .call(
                reqwest::Method::GET,
                policy_path(kind),
                "application/json",
                Vec::new(),
            )
            .await?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| AdminClientError::Malformed)?;
        let encoded = value["policy"]
            .as_str()
            .ok_or(AdminClientError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| AdminClientError::Malformed)?;
        String::from_utf8(bytes).map_err(|_| AdminClientError::Malformed)
    }

    /// Replaces the reference values.
    pub async fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), AdminClientError> {
        let body = serde_json::to_vec(values).map_err(|_| AdminClientError::Malformed)?;
        self.call(
            reqwest::Method::POST,
            "/kbs/v0/reference-values",
            "application/json",
            body,
        )
        .await
        .map(drop)
    }

    /// Reads the reference values.
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
        serde_json::from_slice(&body).map_err(|_| AdminClientError::Malformed)
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
}
