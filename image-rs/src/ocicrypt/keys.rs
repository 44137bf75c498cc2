//! Asymmetric keys for JWE recipients: RSA and EC (P-256, P-384, P-521), parsed from PEM.

use std::fmt;

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};

/// Errors from parsing a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM holds no key of a supported kind (RSA, EC P-256, P-384 or P-521; PKCS#8, PKCS#1,
    /// SEC1 or SubjectPublicKeyInfo).
    #[error("no supported {0} key in PEM (RSA, EC P-256, P-384 or P-521)")]
    Unsupported(&'static str),
}

/// A private key that can unwrap JWE recipients addressed to it.
#[derive(Clone)]
pub enum PrivateKey {
    /// RSA, for `RSA-OAEP` and `RSA-OAEP-256`.
    Rsa(Box<rsa::RsaPrivateKey>),
    /// EC P-256, for `ECDH-ES+A256KW`.
    P256(p256::SecretKey),
    /// EC P-384, for `ECDH-ES+A256KW`.
    P384(p384::SecretKey),
    /// EC P-521, for `ECDH-ES+A256KW`.
    P521(p521::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str(match self {
            Self::Rsa(_) => "PrivateKey::Rsa(..)",
            Self::P256(_) => "PrivateKey::P256(..)",
            Self::P384(_) => "PrivateKey::P384(..)",
            Self::P521(_) => "PrivateKey::P521(..)",
        })
    }
}

impl PrivateKey {
    /// Parses a PEM private key: PKCS#8 (RSA or EC), PKCS#1 (RSA) or SEC1 (EC).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_pem(pem) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_pem(pem) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = p521::SecretKey::from_pkcs8_pem(pem) {
            return Ok(Self::P521(k));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = p521::SecretKey::from_sec1_pem(pem) {
            return Ok(Self::P521(k));
        }
        Err(KeyError::Unsupported("private"))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            Self::P256(k) => PublicKey::P256(k.public_key()),
            Self::P384(k) => PublicKey::P384(k.public_key()),
            Self::P521(k) => PublicKey::P521(k.public_key()),
        }
    }
}

/// A public key that JWE recipients can be wrapped for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: wrapped with `RSA-OAEP` (as containers/ocicrypt does).
    Rsa(rsa::RsaPublicKey),
    /// EC P-256: wrapped with `ECDH-ES+A256KW`.
    P256(p256::PublicKey),
    /// EC P-384: wrapped with `ECDH-ES+A256KW`.
    P384(p384::PublicKey),
    /// EC P-521: wrapped with `ECDH-ES+A256KW`.
    P521(p521::PublicKey),
}

impl PublicKey {
    /// Parses a PEM public key: SubjectPublicKeyInfo (RSA or EC) or PKCS#1 (RSA).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(pem) {
            return Ok(Self::Rsa(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_pkcs1_pem(pem) {
            return Ok(Self::Rsa(k));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_pem(pem) {
            return Ok(Self::P256(k));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_pem(pem) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = p521::PublicKey::from_public_key_pem(pem) {
            return Ok(Self::P521(k));
        }
        Err(KeyError::Unsupported("public"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem() {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
        let k = PrivateKey::from_pem(&pem).unwrap();
        assert!(matches!(k, PrivateKey::P256(_)));
        let pub_pem = sk.public_key().to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(PublicKey::from_pem(&pub_pem).unwrap(), k.public_key());
        assert_eq!(format!("{k:?}"), "PrivateKey::P256(..)");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(PublicKey::from_pem("not pem").is_err());
    }
}
