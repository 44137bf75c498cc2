//! The ephemeral key pair of one attestation session, and opening the JWE that the broker
//! encrypts resources to it with (`ECDH-ES+A256KW` or `RSA-OAEP-256`, content `A256GCM`), through
//! the project's one JOSE implementation (`tsuba_protocols::jose`).

use serde_json::Value;
use tsuba_protocols::jose::{self, KeyWrap, PrivateKey};
use zeroize::Zeroizing;

/// Which kind of ephemeral key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeKeyKind {
    /// EC P-256 with `ECDH-ES+A256KW` (the guest-components default).
    #[default]
    EcP256,
    /// RSA 2048 with `RSA-OAEP-256`.
    Rsa2048,
}

/// Errors while creating a key or opening a JWE.
#[derive(Debug, thiserror::Error)]
pub enum TeeKeyError {
    /// Generating the RSA key failed.
    #[error("rsa key generation failed")]
    Generate(#[source] jose::KeyError),
    /// The JWE did not open: malformed, for another key, or tampered with.
    #[error("the broker's jwe did not open")]
    Jwe(#[source] jose::JweError),
}

/// An ephemeral key pair; the private half never leaves this value.
pub struct TeeKey {
    kind: TeeKeyKind,
    private: PrivateKey,
}

impl std::fmt::Debug for TeeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl TeeKey {
    /// Generates a fresh key pair.
    pub fn generate(kind: TeeKeyKind) -> Result<Self, TeeKeyError> {
        let private = match kind {
            TeeKeyKind::EcP256 => PrivateKey::generate_p256(),
            TeeKeyKind::Rsa2048 => PrivateKey::generate_rsa(2048).map_err(TeeKeyError::Generate)?,
        };
        Ok(Self { kind, private })
    }

    /// The public key as the JWK sent in the runtime data (`tee-pubkey`), naming the key
    /// management the broker is to use.
    pub fn public_jwk(&self) -> Value {
        let wrap = match self.kind {
            TeeKeyKind::EcP256 => KeyWrap::EcdhEsA256Kw,
            TeeKeyKind::Rsa2048 => KeyWrap::RsaOaep256,
        };
        self.private.public_key().to_jwk(wrap.name())
    }

    /// Opens a flattened-JSON JWE (the broker's resource response body).
    pub fn decrypt(&self, jwe_json: &[u8]) -> Result<Zeroizing<Vec<u8>>, TeeKeyError> {
        jose::decrypt(jwe_json, std::slice::from_ref(&self.private)).map_err(TeeKeyError::Jwe)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    /// What the broker does with the JWK this key sends: read it back and encrypt to it.
    fn broker_encrypts_to(key: &TeeKey, plaintext: &[u8]) -> Vec<u8> {
        let jwk = key.public_jwk();
        let member = |name: &str| jwk[name].as_str().unwrap().to_owned();
        let (public, wrap) = match key.kind {
            TeeKeyKind::EcP256 => (
                jose::PublicKey::from_ec_jwk(&member("crv"), &member("x"), &member("y")).unwrap(),
                KeyWrap::EcdhEsA256Kw,
            ),
            TeeKeyKind::Rsa2048 => (
                jose::PublicKey::from_rsa_jwk(&member("n"), &member("e"), jose::RSA_TEE_KEY_BITS)
                    .unwrap(),
                KeyWrap::RsaOaep256,
            ),
        };
        serde_json::to_vec(&jose::encrypt_flattened(plaintext, &public, wrap).unwrap()).unwrap()
    }

    #[test]
    fn opens_what_is_encrypted_to_its_jwk_and_nothing_else() {
        for kind in [TeeKeyKind::EcP256, TeeKeyKind::Rsa2048] {
            let key = TeeKey::generate(kind).unwrap();
            let jwe = broker_encrypts_to(&key, b"resource");
            assert_eq!(&key.decrypt(&jwe).unwrap()[..], b"resource", "{kind:?}");
            let other = TeeKey::generate(kind).unwrap();
            assert!(matches!(
                other.decrypt(&jwe),
                Err(TeeKeyError::Jwe(jose::JweError::NoMatchingKey { .. }))
            ));
            let mut tampered: Value = serde_json::from_slice(&jwe).unwrap();
            let mut ciphertext = URL_SAFE_NO_PAD
                .decode(tampered["ciphertext"].as_str().unwrap())
                .unwrap();
            ciphertext[0] ^= 1;
            tampered["ciphertext"] = URL_SAFE_NO_PAD.encode(ciphertext).into();
            assert!(matches!(
                key.decrypt(tampered.to_string().as_bytes()),
                Err(TeeKeyError::Jwe(jose::JweError::Authentication))
            ));
        }
        let key = TeeKey::generate(TeeKeyKind::EcP256).unwrap();
        for bad in ["", "{}", "[]"] {
            assert!(matches!(
                key.decrypt(bad.as_bytes()),
                Err(TeeKeyError::Jwe(jose::JweError::Malformed { .. }))
            ));
        }
    }

    #[test]
    fn public_jwk_shapes() {
        let ec = TeeKey::generate(TeeKeyKind::EcP256).unwrap().public_jwk();
        assert_eq!(
            (ec["kty"].as_str(), ec["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(ec["alg"], "ECDH-ES+A256KW");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(ec["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let rsa = TeeKey::generate(TeeKeyKind::Rsa2048).unwrap().public_jwk();
        assert_eq!(rsa["kty"], "RSA");
        assert_eq!(rsa["alg"], "RSA-OAEP-256");
        assert_eq!(rsa["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(rsa["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
    }
}
