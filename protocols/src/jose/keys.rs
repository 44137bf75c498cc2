//! The asymmetric keys JWE recipients are wrapped for: RSA and EC (P-256, P-384, P-521), from PEM
//! (ocicrypt's key files) or from a JWK's members (the guest's ephemeral key in the KBS protocol),
//! and back to a JWK.

use std::fmt;
use std::ops::RangeInclusive;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::Value;

/// RSA modulus sizes (bits) a guest's ephemeral key may have: smaller is weak, larger only costs
/// the broker work.
pub const RSA_TEE_KEY_BITS: RangeInclusive<usize> = 2048..=4096;

/// Longest RSA public exponent accepted from a JWK (bytes).
const MAX_RSA_EXPONENT_LEN: usize = 8;

/// Errors while reading a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM holds no key of a supported kind (RSA, EC P-256, P-384 or P-521; PKCS#8, PKCS#1,
    /// SEC1 or SubjectPublicKeyInfo).
    #[error("no supported {0} key in PEM (RSA, EC P-256, P-384 or P-521)")]
    Unsupported(&'static str),
    /// The JWK names a curve this code has no implementation of.
    #[error("unsupported curve {0:?} (P-256, P-384 or P-521)")]
    Curve(String),
    /// A JWK member is not base64url.
    #[error("key member {0} is not base64url")]
    Encoding(&'static str),
    /// The coordinates are not a point on the named curve.
    #[error("key is not a valid point on its curve")]
    InvalidPoint,
    /// The RSA modulus is outside the accepted sizes.
    #[error("rsa key has {bits} bits, accepted are {min}..={max}")]
    RsaSize {
        /// The modulus size given.
        bits: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// The RSA key is malformed.
    #[error("rsa key is invalid")]
    Rsa(#[source] rsa::Error),
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

    /// A fresh P-256 key.
    pub fn generate_p256() -> Self {
        Self::P256(p256::SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// A fresh RSA key of `bits` bits.
    pub fn generate_rsa(bits: usize) -> Result<Self, KeyError> {
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, bits)
            .map(|key| Self::Rsa(Box::new(key)))
            .map_err(KeyError::Rsa)
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
    /// RSA.
    Rsa(rsa::RsaPublicKey),
    /// EC P-256.
    P256(p256::PublicKey),
    /// EC P-384.
    P384(p384::PublicKey),
    /// EC P-521.
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

    /// An EC key from a JWK's `crv`, `x` and `y` (base64url, each as long as the curve's field).
    pub fn from_ec_jwk(crv: &str, x: &str, y: &str) -> Result<Self, KeyError> {
        let (x, y) = (decode("x", x)?, decode("y", y)?);
        let point = uncompressed_point(&x, &y);
        match crv {
            "P-256" if x.len() == 32 && y.len() == 32 => p256::PublicKey::from_sec1_bytes(&point)
                .map(Self::P256)
                .map_err(|_| KeyError::InvalidPoint),
            "P-384" if x.len() == 48 && y.len() == 48 => p384::PublicKey::from_sec1_bytes(&point)
                .map(Self::P384)
                .map_err(|_| KeyError::InvalidPoint),
            "P-521" if x.len() == 66 && y.len() == 66 => p521::PublicKey::from_sec1_bytes(&point)
                .map(Self::P521)
                .map_err(|_| KeyError::InvalidPoint),
            "P-256" | "P-384" | "P-521" => Err(KeyError::InvalidPoint),
            other => Err(KeyError::Curve(other.chars().take(40).collect())),
        }
    }

    /// An RSA key from a JWK's `n` and `e` (base64url), with a modulus of `bits`. The sizes are
    /// checked before any arithmetic, so a huge key from a peer costs nothing.
    pub fn from_rsa_jwk(n: &str, e: &str, bits: RangeInclusive<usize>) -> Result<Self, KeyError> {
        let (n, e) = (decode("n", n)?, decode("e", e)?);
        let size = |bytes: usize| KeyError::RsaSize {
            bits: bytes,
            min: *bits.start(),
            max: *bits.end(),
        };
        let n_bits = n.iter().skip_while(|b| **b == 0).count().saturating_mul(8);
        if !bits.contains(&n_bits) || e.len() > MAX_RSA_EXPONENT_LEN {
            return Err(size(n_bits));
        }
        let key = rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )
        .map_err(KeyError::Rsa)?;
        let exact = key.n().bits();
        if !bits.contains(&exact) {
            return Err(size(exact));
        }
        Ok(Self::Rsa(key))
    }

    /// The key as a JWK naming `alg`, the members in RFC 7638's order.
    pub fn to_jwk(&self, alg: &str) -> Value {
        let ec = |crv: &str, x: Option<&[u8]>, y: Option<&[u8]>| {
            let coordinate =
                |c: Option<&[u8]>| c.map(|b| URL_SAFE_NO_PAD.encode(b)).unwrap_or_default();
            serde_json::json!({
                "kty": "EC", "crv": crv, "alg": alg, "x": coordinate(x), "y": coordinate(y),
            })
        };
        match self {
            Self::Rsa(key) => serde_json::json!({
                "kty": "RSA", "alg": alg,
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            }),
            Self::P256(key) => {
                let point = p256::EncodedPoint::from(key);
                ec(
                    "P-256",
                    point.x().map(|c| &c[..]),
                    point.y().map(|c| &c[..]),
                )
            }
            Self::P384(key) => {
                let point = p384::EncodedPoint::from(key);
                ec(
                    "P-384",
                    point.x().map(|c| &c[..]),
                    point.y().map(|c| &c[..]),
                )
            }
            Self::P521(key) => {
                let point = p521::EncodedPoint::from(key);
                ec(
                    "P-521",
                    point.x().map(|c| &c[..]),
                    point.y().map(|c| &c[..]),
                )
            }
        }
    }
}

fn decode(member: &'static str, value: &str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| KeyError::Encoding(member))
}

/// SEC1's uncompressed encoding of `(x, y)`.
fn uncompressed_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
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
    fn garbage_pem_is_refused() {
        assert!(
            PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        assert!(PublicKey::from_pem("not pem").is_err());
    }

    #[test]
    fn ec_jwks_round_trip_on_every_curve() {
        for key in [
            PrivateKey::generate_p256(),
            PrivateKey::P384(p384::SecretKey::random(&mut rand::rngs::OsRng)),
            PrivateKey::P521(p521::SecretKey::random(&mut rand::rngs::OsRng)),
        ] {
            let public = key.public_key();
            let jwk = public.to_jwk("ECDH-ES+A256KW");
            assert_eq!(jwk["alg"], "ECDH-ES+A256KW");
            let member = |name: &str| jwk[name].as_str().unwrap().to_owned();
            let read = PublicKey::from_ec_jwk(&member("crv"), &member("x"), &member("y")).unwrap();
            assert_eq!(read, public);
        }
    }

    #[test]
    fn bad_ec_jwks_are_refused() {
        let jwk = PrivateKey::generate_p256()
            .public_key()
            .to_jwk("ECDH-ES+A256KW");
        let (x, y) = (jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
        // Flip the y coordinate: the point leaves the curve.
        let mut flipped = URL_SAFE_NO_PAD.decode(y).unwrap();
        flipped[31] ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(flipped);
        assert!(matches!(
            PublicKey::from_ec_jwk("P-256", x, &flipped),
            Err(KeyError::InvalidPoint)
        ));
        // P-256 coordinates named P-384, a short coordinate, an unknown curve, not base64url.
        assert!(matches!(
            PublicKey::from_ec_jwk("P-384", x, y),
            Err(KeyError::InvalidPoint)
        ));
        assert!(matches!(
            PublicKey::from_ec_jwk("P-256", &x[1..], y),
            Err(KeyError::InvalidPoint | KeyError::Encoding(_))
        ));
        assert!(matches!(
            PublicKey::from_ec_jwk("secp256k1", x, y),
            Err(KeyError::Curve(c)) if c == "secp256k1"
        ));
        assert!(matches!(
            PublicKey::from_ec_jwk("P-256", "!!", y),
            Err(KeyError::Encoding("x"))
        ));
    }

    #[test]
    fn rsa_jwks_are_bounded_before_any_arithmetic() {
        let key = PrivateKey::generate_rsa(2048).unwrap().public_key();
        let jwk = key.to_jwk("RSA-OAEP-256");
        let (n, e) = (jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap());
        assert_eq!(e, "AQAB");
        assert_eq!(
            PublicKey::from_rsa_jwk(n, e, RSA_TEE_KEY_BITS).unwrap(),
            key
        );
        let tiny = URL_SAFE_NO_PAD.encode([0xffu8; 64]);
        assert!(matches!(
            PublicKey::from_rsa_jwk(&tiny, e, RSA_TEE_KEY_BITS),
            Err(KeyError::RsaSize { bits: 512, .. })
        ));
        let huge = URL_SAFE_NO_PAD.encode(vec![0xffu8; 2048]);
        assert!(matches!(
            PublicKey::from_rsa_jwk(&huge, e, RSA_TEE_KEY_BITS),
            Err(KeyError::RsaSize { .. })
        ));
        let long_exponent = URL_SAFE_NO_PAD.encode([1u8; 9]);
        assert!(matches!(
            PublicKey::from_rsa_jwk(n, &long_exponent, RSA_TEE_KEY_BITS),
            Err(KeyError::RsaSize { .. })
        ));
    }
}
