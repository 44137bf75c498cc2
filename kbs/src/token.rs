//! The attestation token: an ES256 JWT that the broker issues after a successful attestation and
//! accepts back as a bearer token on resource requests. Like Trustee's EAR token, its header embeds
//! the signer's public JWK; the broker itself trusts only its own key.
//!
//! The key is kept and stored as a `p256` key (PKCS#8 PEM, JWK); signing and checking go through
//! `ring`, whose P-256 is about ten times faster than `p256`'s (one of each per handshake).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest token accepted as a bearer token.
pub(crate) const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Issuer name in every token.
pub(crate) const ISSUER: &str = "tsuba-kbs";

/// Errors while issuing or checking a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not three base64url parts of JSON.
    #[error("token is malformed")]
    Malformed,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The header names an algorithm other than ES256.
    #[error("token algorithm is not es256")]
    Algorithm,
    /// The signature does not verify under the broker's key.
    #[error("token signature is invalid")]
    Signature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The claims could not be serialised.
    #[error("token claims could not be serialised")]
    Serialize(#[source] serde_json::Error),
    /// The stored signing key could not be read.
    #[error("token signing key is not a valid pkcs#8 p-256 key")]
    Key(#[source] p256::pkcs8::Error),
    /// The signature code refused the key pair.
    #[error("token signing key was refused")]
    KeyRejected(#[source] ring::error::KeyRejected),
    /// Signing failed (no randomness).
    #[error("token signing failed")]
    Sign(#[source] ring::error::Unspecified),
}

/// What the broker asserts about an attested guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenClaims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// The TEE type the evidence came from (`snp`, `tdx`, `sample`, ...).
    pub tee: String,
    /// True when the evidence was simulated (sim roots or the sample TEE): never production.
    pub simulated: bool,
    /// The guest's ephemeral public key (JWK) that resources are encrypted to.
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: Value,
    /// The verified evidence claims the policies saw.
    pub claims: Value,
    /// The initdata digest the guest presented its document for and the evidence binds (SNP
    /// `HOST_DATA` or TDX `MRCONFIGID`, lowercase hex), as Trustee's `init_data` claim; `None`
    /// (null) when the guest presented no init-data.
    #[serde(default)]
    pub init_data: Option<String>,
    /// That document's `[data]` table, as Trustee's `init_data_claims`; `None` (null) when the
    /// guest presented no init-data.
    #[serde(default)]
    pub init_data_claims: Option<BTreeMap<String, String>>,
}

/// Signs and checks attestation tokens with the broker's P-256 key.
pub(crate) struct TokenSigner {
    /// The key as stored (PKCS#8 round trip).
    key: SigningKey,
    /// The same key, for signing.
    signer: ring::signature::EcdsaKeyPair,
    /// The uncompressed SEC1 public point, for checking.
    public: Vec<u8>,
    rng: ring::rand::SystemRandom,
    header_b64: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Generates a new signing key.
    pub(crate) fn generate() -> Result<Self, TokenError> {
        Self::from_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// Loads a key from PKCS#8 PEM.
    pub(crate) fn from_pkcs8_pem(pem: &str) -> Result<Self, TokenError> {
        Self::from_key(SigningKey::from_pkcs8_pem(pem).map_err(TokenError::Key)?)
    }

    /// The key as PKCS#8 PEM, for storage.
    pub(crate) fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, TokenError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(TokenError::Key)
    }

    fn from_key(key: SigningKey) -> Result<Self, TokenError> {
        let public = p256::PublicKey::from(key.verifying_key());
        let mut jwk: Value = serde_json::from_str(&public.to_jwk_string()).unwrap_or(Value::Null);
        // The key's algorithm in the JWK too: Trustee reads it there when it checks a token
        // as a passport ("Failed to find key_algorithm in Jwk" without it).
        if let Some(members) = jwk.as_object_mut() {
            members.insert("alg".into(), Value::from("ES256"));
        }
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "jwk": jwk});
        let point = public.to_encoded_point(false).as_bytes().to_vec();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &Zeroizing::new(key.to_bytes())[..],
            &point,
            &rng,
        )
        .map_err(TokenError::KeyRejected)?;
        Ok(Self {
            key,
            signer,
            public: point,
            rng,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
        })
    }

    /// Issues a token carrying `claims`.
    pub(crate) fn issue(&self, claims: &TokenClaims) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(TokenError::Serialize)?;
        let signing_input = format!("{}.{}", self.header_b64, URL_SAFE_NO_PAD.encode(payload));
        // ES256 in JWS form: r || s, 32 bytes each (ring's "fixed" encoding).
        let signature = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(TokenError::Sign)?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks a token's signature, algorithm and expiry at `now` (Unix seconds).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = decode_json(header)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        let signing_input_len = token.len() - signature_len(token);
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &self.public,
        )
        .verify(
            &token.as_bytes()[..signing_input_len],
            &signature.to_bytes(),
        )
        .map_err(|_| TokenError::Signature)?;
        let claims: TokenClaims = decode_json(payload)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Length of the `.signature` suffix of a three-part token.
fn signature_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> TokenClaims {
        TokenClaims {
            iss: ISSUER.into(),
            iat: 100,
            exp,
            tee: "sample".into(),
            simulated: true,
            tee_pubkey: serde_json::json!({"kty": "EC"}),
            claims: serde_json::json!({"measurement": "ab"}),
            init_data: Some("cd".repeat(32)),
            init_data_claims: Some(BTreeMap::from([("aa.toml".into(), "x = 1\n".into())])),
        }
    }

    #[test]
    fn init_data_claims_round_trip_and_older_claims_without_them_still_read() {
        let json = serde_json::to_value(claims(200)).unwrap();
        assert_eq!(json["init_data"], "cd".repeat(32));
        assert_eq!(json["init_data_claims"]["aa.toml"], "x = 1\n");
        // Claims stored by a broker from before init-data (a shared database's sessions).
        let mut older = json.clone();
        let map = older.as_object_mut().unwrap();
        map.remove("init_data");
        map.remove("init_data_claims");
        let read: TokenClaims = serde_json::from_value(older).unwrap();
        assert_eq!(read.init_data, None);
        assert_eq!(read.init_data_claims, None);
        // Without init-data the claims say null, not absent.
        let none = TokenClaims {
            init_data: None,
            init_data_claims: None,
            ..claims(200)
        };
        let json = serde_json::to_value(none).unwrap();
        assert!(json["init_data"].is_null() && json.get("init_data_claims").is_some());
    }

    #[test]
    fn issue_then_verify() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        assert_eq!(signer.verify(&token, 150).unwrap(), claims(200));
        let header: Value = decode_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(
            header["jwk"]["alg"], "ES256",
            "Trustee needs the JWK's algorithm"
        );
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        assert!(matches!(
            signer.verify(&token, 200),
            Err(TokenError::Expired)
        ));

        // Swap in a payload claiming a different TEE: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(200);
        forged.tee = "snp".into();
        forged.simulated = false;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let forged_token = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(
            signer.verify(&forged_token, 150),
            Err(TokenError::Signature)
        ));

        let other = TokenSigner::generate().unwrap();
        assert!(matches!(
            other.verify(&token, 150),
            Err(TokenError::Signature)
        ));

        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            signer.verify(&none_alg, 150),
            Err(TokenError::Algorithm)
        ));
        assert!(matches!(
            signer.verify("a.b", 150),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            signer.verify("a.b.c.d", 150),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            signer.verify(&"a".repeat(MAX_TOKEN_LEN + 1), 150),
            Err(TokenError::TooLong)
        ));
    }

    #[test]
    fn signature_is_standard_es256_for_an_independent_verifier() {
        use p256::ecdsa::signature::{Signer, Verifier};

        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        let verifying = signer.key.verifying_key();
        verifying.verify(input.as_bytes(), &sig).unwrap();
        assert!(verifying.verify(b"other input", &sig).is_err());

        // And the other way round: a JWS signed by `p256` verifies here.
        let header = token.split('.').next().unwrap();
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(300)).unwrap());
        let input = format!("{header}.{payload}");
        let sig: Signature = signer.key.sign(input.as_bytes());
        let foreign = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert_eq!(signer.verify(&foreign, 150).unwrap().exp, 300);
    }

    #[test]
    fn key_survives_pem_round_trip() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.issue(&claims(200)).unwrap();
        let pem = signer.to_pkcs8_pem().unwrap();
        let reloaded = TokenSigner::from_pkcs8_pem(pem.as_str()).unwrap();
        assert_eq!(reloaded.verify(&token, 150).unwrap().tee, "sample");
        assert!(TokenSigner::from_pkcs8_pem("not a pem").is_err());
    }
}
