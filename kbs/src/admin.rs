//! Admin authentication: every admin call carries `Authorization: Bearer <JWT>` signed with the
//! administrator's Ed25519 key (`{"alg":"EdDSA"}`), as Trustee's broker expects. The token must
//! carry an `exp` in the future; there is no unauthenticated admin access.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;

/// Largest admin token accepted.
const MAX_ADMIN_TOKEN_LEN: usize = 8 * 1024;

/// Allowed clock skew for `iat`/`nbf` (seconds).
const SKEW: u64 = 60;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token is not a well-formed EdDSA JWT.
    #[error("admin token is malformed")]
    Malformed,
    /// The signature does not verify under the admin key.
    #[error("admin token signature is invalid")]
    Signature,
    /// The token has expired, has no `exp`, or is not valid yet.
    #[error("admin token is expired or not yet valid")]
    Expired,
    /// The configured admin key could not be read.
    #[error("admin public key is not a valid ed25519 spki pem")]
    Key(#[source] ed25519_dalek::pkcs8::spki::Error),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

/// Checks admin tokens against the administrator's public key.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    key: VerifyingKey,
}

impl AdminAuth {
    /// Uses `key` as the administrator's key.
    pub fn new(key: VerifyingKey) -> Self {
        Self { key }
    }

    /// Reads the administrator's key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_public_key_pem(pem: &str) -> Result<Self, AdminAuthError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(Self::new)
            .map_err(AdminAuthError::Key)
    }

    /// Checks the value of an `Authorization` header at `now` (Unix seconds).
    pub fn check(&self, authorization: Option<&str>, now: u64) -> Result<(), AdminAuthError> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(AdminAuthError::Missing)?
            .trim();
        if token.len() > MAX_ADMIN_TOKEN_LEN {
            return Err(AdminAuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AdminAuthError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != "EdDSA" {
            return Err(AdminAuthError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(AdminAuthError::Malformed)?;
        let signed_len = token.len() - signature_suffix_len(token);
        self.key
            .verify(&token.as_bytes()[..signed_len], &signature)
            .map_err(|_| AdminAuthError::Signature)?;
        let claims: Claims = decode_json(payload)?;
        let not_before = claims.nbf.or(claims.iat).unwrap_or(0);
        match claims.exp {
            Some(exp) if exp > now && not_before <= now.saturating_add(SKEW) => Ok(()),
            _ => Err(AdminAuthError::Expired),
        }
    }
}

fn signature_suffix_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AdminAuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AdminAuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AdminAuthError::Malformed)
}

/// Makes admin tokens (for the CLI and tests).
pub fn sign_admin_token(key: &ed25519_dalek::SigningKey, iat: u64, exp: u64) -> String {
    use ed25519_dalek::Signer;

    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": "tsuba", "sub": "admin", "aud": ["KBS"], "role": "admin", "iat": iat, "exp": exp,
    });
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePublicKey;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn valid_token_passes() {
        let auth = AdminAuth::new(key(1).verifying_key());
        let token = sign_admin_token(&key(1), 100, 200);
        auth.check(Some(&format!("Bearer {token}")), 150).unwrap();
    }

    #[test]
    fn pem_key_loads() {
        let pem = key(1)
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let auth = AdminAuth::from_public_key_pem(&pem).unwrap();
        let token = sign_admin_token(&key(1), 100, 200);
        auth.check(Some(&format!("Bearer {token}")), 150).unwrap();
        assert!(AdminAuth::from_public_key_pem("garbage").is_err());
    }

    #[test]
    fn everything_else_is_refused() {
        let auth = AdminAuth::new(key(1).verifying_key());
        let token = sign_admin_token(&key(1), 100, 200);
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(matches!(
            auth.check(None, 150),
            Err(AdminAuthError::Missing)
        ));
        assert!(matches!(
            auth.check(Some(&token), 150),
            Err(AdminAuthError::Missing)
        ));
        assert!(matches!(
            auth.check(Some(&bearer(&token)), 200),
            Err(AdminAuthError::Expired)
        ));
        assert!(matches!(
            auth.check(Some(&bearer(&token)), 10),
            Err(AdminAuthError::Expired)
        ));
        let foreign = sign_admin_token(&key(2), 100, 200);
        assert!(matches!(
            auth.check(Some(&bearer(&foreign)), 150),
            Err(AdminAuthError::Signature)
        ));
        // Re-sign a longer-lived payload with the wrong key, keep the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let longer = URL_SAFE_NO_PAD.encode(r#"{"exp":99999}"#);
        let forged = format!("{}.{longer}.{}", parts[0], parts[2]);
        assert!(matches!(
            auth.check(Some(&bearer(&forged)), 150),
            Err(AdminAuthError::Signature)
        ));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            auth.check(Some(&bearer(&none)), 150),
            Err(AdminAuthError::Malformed)
        ));
        assert!(matches!(
            auth.check(Some("Bearer x.y"), 150),
            Err(AdminAuthError::Malformed)
        ));
        let no_exp_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#)
        );
        let sig = ed25519_dalek::Signer::sign(&key(1), no_exp_input.as_bytes());
        let no_exp = format!("{no_exp_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert!(matches!(
            auth.check(Some(&bearer(&no_exp)), 150),
            Err(AdminAuthError::Expired)
        ));
    }
}
