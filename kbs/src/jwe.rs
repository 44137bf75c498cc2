//! Resources leave the broker as a JWE (flattened JSON serialization) encrypted to the attested
//! guest's ephemeral public key: `RSA-OAEP-256` or `ECDH-ES+A256KW` (P-256) for the content key,
//! `A256GCM` for the content, exactly the two shapes that Trustee's broker produces.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kbs_types::TeePubKey;
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use sha2::Sha256;
use tsuba_protocols::jose::concat_kdf;

/// Smallest and largest RSA modulus (bits) accepted for a TEE key.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// Errors while encrypting a resource to a TEE key.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// The key's `alg` (or curve) is not one this broker encrypts to.
    #[error("unsupported tee key algorithm {alg:?}")]
    UnsupportedAlgorithm {
        /// The `alg` or `crv` value the guest sent.
        alg: String,
    },
    /// A key field is not valid base64url.
    #[error("tee key field {field} is not base64url")]
    KeyEncoding {
        /// Which JWK field.
        field: &'static str,
        /// The decoding error.
        #[source]
        source: base64::DecodeError,
    },
    /// The EC point is not on P-256.
    #[error("tee key is not a valid p-256 point")]
    InvalidEcPoint,
    /// The RSA key is malformed.
    #[error("tee key is not a valid rsa public key")]
    InvalidRsaKey(#[source] rsa::Error),
    /// The RSA key is outside the accepted size range.
    #[error("rsa tee key has {bits} bits, accepted range is 2048..=4096")]
    RsaKeySize {
        /// The modulus size the guest sent.
        bits: usize,
    },
    /// A cryptographic primitive failed.
    #[error("jwe {step} failed")]
    Crypto {
        /// Which step.
        step: &'static str,
    },
}

/// A JWE in flattened JSON serialization; every field is base64url without padding.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FlattenedJwe {
    /// The protected header.
    pub protected: String,
    /// The wrapped content-encryption key.
    pub encrypted_key: String,
    /// The 96-bit GCM nonce.
    pub iv: String,
    /// The encrypted resource.
    pub ciphertext: String,
    /// The GCM tag.
    pub tag: String,
}

/// Validates that `key` is a key this broker can encrypt to, without encrypting anything.
pub(crate) fn check_tee_key(key: &TeePubKey) -> Result<(), JweError> {
    match key {
        TeePubKey::EC { .. } => ec_key(key).map(|_| ()),
        TeePubKey::RSA { .. } => rsa_key(key).map(|_| ()),
        TeePubKey::AKP { alg, .. } => Err(JweError::UnsupportedAlgorithm { alg: alg.clone() }),
    }
}

/// Encrypts `plaintext` to `key`.
pub(crate) fn encrypt(key: &TeePubKey, plaintext: &[u8]) -> Result<FlattenedJwe, JweError> {
    // The content key decrypts the resource: wiped when this returns.
    let mut cek = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(cek.as_mut_slice());
    let (protected, encrypted_key) = match key {
        TeePubKey::EC { .. } => {
            let public = ec_key(key)?;
            // The ephemeral key and the agreement through `ring` (about four times faster than
            // `p256` here; one per resource fetched). Its public key is an uncompressed point.
            let rng = ring::rand::SystemRandom::new();
            let ephemeral =
                ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                    .map_err(|_| JweError::Crypto { step: "ecdh" })?;
            let epk = ephemeral
                .compute_public_key()
                .map_err(|_| JweError::Crypto { step: "ecdh" })?;
            let peer = ring::agreement::UnparsedPublicKey::new(
                &ring::agreement::ECDH_P256,
                p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&public, false),
            );
            let kek = ring::agreement::agree_ephemeral(ephemeral, &peer, |shared| {
                concat_kdf(shared, "ECDH-ES+A256KW")
            })
            .map_err(|_| JweError::Crypto { step: "ecdh" })?;
            let wrapped = aes_kw::KekAes256::from(kek)
                .wrap_vec(cek.as_slice())
                .map_err(|_| JweError::Crypto { step: "key wrap" })?;
            let (Some(x), Some(y)) = (epk.as_ref().get(1..33), epk.as_ref().get(33..65)) else {
                return Err(JweError::Crypto {
                    step: "epk encoding",
                });
            };
            let header = serde_json::json!({
                "alg": "ECDH-ES+A256KW",
                "enc": "A256GCM",
                "epk": {"crv": "P-256", "kty": "EC", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)},
            });
            (header, wrapped)
        }
        TeePubKey::RSA { .. } => {
            let public = rsa_key(key)?;
            let wrapped = public
                .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), cek.as_slice())
                .map_err(|_| JweError::Crypto { step: "rsa-oaep" })?;
            (
                serde_json::json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"}),
                wrapped,
            )
        }
        TeePubKey::AKP { alg, .. } => {
            return Err(JweError::UnsupportedAlgorithm { alg: alg.clone() });
        }
    };
    let mut header_json = String::new();
    crate::binding::write_canonical(&protected, &mut header_json);
    let protected = URL_SAFE_NO_PAD.encode(header_json);
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let cipher = Aes256Gcm::new(&(*cek).into());
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| JweError::Crypto { step: "aes-gcm" })?;
    let tag = sealed.split_off(sealed.len().saturating_sub(16));
    Ok(FlattenedJwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(encrypted_key),
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(sealed),
        tag: URL_SAFE_NO_PAD.encode(tag),
    })
}

fn decode(field: &'static str, value: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|source| JweError::KeyEncoding { field, source })
}

fn ec_key(key: &TeePubKey) -> Result<p256::PublicKey, JweError> {
    let TeePubKey::EC { crv, alg, x, y } = key else {
        return Err(JweError::InvalidEcPoint);
    };
    if alg != "ECDH-ES+A256KW" {
        return Err(JweError::UnsupportedAlgorithm { alg: alg.clone() });
    }
    if crv != "P-256" {
        return Err(JweError::UnsupportedAlgorithm { alg: crv.clone() });
    }
    let (x, y) = (decode("x", x)?, decode("y", y)?);
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::InvalidEcPoint);
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| JweError::InvalidEcPoint)
}

fn rsa_key(key: &TeePubKey) -> Result<rsa::RsaPublicKey, JweError> {
    let TeePubKey::RSA { alg, k_mod, k_exp } = key else {
        return Err(JweError::Crypto { step: "rsa key" });
    };
    if alg != "RSA-OAEP-256" {
        return Err(JweError::UnsupportedAlgorithm { alg: alg.clone() });
    }
    let n = decode("n", k_mod)?;
    let e = decode("e", k_exp)?;
    // Bound the work before handing big numbers to the RSA code.
    let bits = n.iter().skip_while(|b| **b == 0).count().saturating_mul(8);
    if !RSA_BITS.contains(&bits) || e.len() > 8 {
        return Err(JweError::RsaKeySize { bits });
    }
    let public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .map_err(JweError::InvalidRsaKey)?;
    let bits = public.n().bits();
    if !RSA_BITS.contains(&bits) {
        return Err(JweError::RsaKeySize { bits });
    }
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_tee_key(secret: &p256::SecretKey) -> TeePubKey {
        let point = p256::EncodedPoint::from(secret.public_key());
        TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            y: URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }
    }

    fn open(jwe: &FlattenedJwe, cek: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new_from_slice(cek).unwrap();
        let mut sealed = URL_SAFE_NO_PAD.decode(&jwe.ciphertext).unwrap();
        sealed.extend(URL_SAFE_NO_PAD.decode(&jwe.tag).unwrap());
        let iv = URL_SAFE_NO_PAD.decode(&jwe.iv).unwrap();
        cipher
            .decrypt(
                &Nonce::from(<[u8; 12]>::try_from(iv.as_slice()).unwrap()),
                Payload {
                    msg: &sealed,
                    aad: jwe.protected.as_bytes(),
                },
            )
            .unwrap()
    }

    #[test]
    fn ecdh_es_round_trip() {
        let secret = p256::SecretKey::random(&mut OsRng);
        let jwe = encrypt(&ec_tee_key(&secret), b"resource bytes").unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap()).unwrap();
        assert_eq!(header["alg"], "ECDH-ES+A256KW");
        assert_eq!(header["enc"], "A256GCM");
        let epk = p256::PublicKey::from_jwk_str(&header["epk"].to_string()).unwrap();
        let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), epk.as_affine());
        let kek = concat_kdf(&shared.raw_secret_bytes()[..], "ECDH-ES+A256KW");
        let cek = aes_kw::KekAes256::from(kek)
            .unwrap_vec(&URL_SAFE_NO_PAD.decode(&jwe.encrypted_key).unwrap())
            .unwrap();
        assert_eq!(open(&jwe, &cek), b"resource bytes");
    }

    #[test]
    fn rsa_oaep_round_trip() {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let key = TeePubKey::RSA {
            alg: "RSA-OAEP-256".into(),
            k_mod: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            k_exp: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        };
        let jwe = encrypt(&key, b"secret").unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap(),
            br#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#
        );
        let cek = private
            .decrypt(
                rsa::Oaep::new::<Sha256>(),
                &URL_SAFE_NO_PAD.decode(&jwe.encrypted_key).unwrap(),
            )
            .unwrap();
        assert_eq!(open(&jwe, &cek), b"secret");
    }

    #[test]
    fn tampered_protected_header_fails_to_open() {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
        let key = TeePubKey::RSA {
            alg: "RSA-OAEP-256".into(),
            k_mod: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            k_exp: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        };
        let mut jwe = encrypt(&key, b"secret").unwrap();
        jwe.protected = URL_SAFE_NO_PAD.encode(br#"{"alg":"RSA-OAEP-256","enc":"A128GCM"}"#);
        let cek = private
            .decrypt(
                rsa::Oaep::new::<Sha256>(),
                &URL_SAFE_NO_PAD.decode(&jwe.encrypted_key).unwrap(),
            )
            .unwrap();
        let cipher = Aes256Gcm::new_from_slice(&cek).unwrap();
        let mut sealed = URL_SAFE_NO_PAD.decode(&jwe.ciphertext).unwrap();
        sealed.extend(URL_SAFE_NO_PAD.decode(&jwe.tag).unwrap());
        let iv = URL_SAFE_NO_PAD.decode(&jwe.iv).unwrap();
        let opened = cipher.decrypt(
            &Nonce::from(<[u8; 12]>::try_from(iv.as_slice()).unwrap()),
            Payload {
                msg: &sealed,
                aad: jwe.protected.as_bytes(),
            },
        );
        assert!(opened.is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        let secret = p256::SecretKey::random(&mut OsRng);
        let TeePubKey::EC { x, y, .. } = ec_tee_key(&secret) else {
            unreachable!()
        };
        let wrong_alg = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES".into(),
            x: x.clone(),
            y: y.clone(),
        };
        assert!(matches!(
            check_tee_key(&wrong_alg),
            Err(JweError::UnsupportedAlgorithm { .. })
        ));
        let wrong_crv = TeePubKey::EC {
            crv: "P-384".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: x.clone(),
            y: y.clone(),
        };
        assert!(matches!(
            check_tee_key(&wrong_crv),
            Err(JweError::UnsupportedAlgorithm { .. })
        ));
        // Flip the y coordinate: the point leaves the curve.
        let mut y_bytes = URL_SAFE_NO_PAD.decode(&y).unwrap();
        y_bytes[31] ^= 1;
        let off_curve = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x,
            y: URL_SAFE_NO_PAD.encode(y_bytes),
        };
        assert!(matches!(
            check_tee_key(&off_curve),
            Err(JweError::InvalidEcPoint)
        ));
        let not_b64 = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "!!".into(),
            y: "??".into(),
        };
        assert!(matches!(
            check_tee_key(&not_b64),
            Err(JweError::KeyEncoding { .. })
        ));
        let tiny_rsa = TeePubKey::RSA {
            alg: "RSA-OAEP-256".into(),
            k_mod: URL_SAFE_NO_PAD.encode([0xffu8; 64]),
            k_exp: "AQAB".into(),
        };
        assert!(matches!(
            check_tee_key(&tiny_rsa),
            Err(JweError::RsaKeySize { bits: 512 })
        ));
        let huge_rsa = TeePubKey::RSA {
            alg: "RSA-OAEP-256".into(),
            k_mod: URL_SAFE_NO_PAD.encode(vec![0xffu8; 2048]),
            k_exp: "AQAB".into(),
        };
        assert!(matches!(
            check_tee_key(&huge_rsa),
            Err(JweError::RsaKeySize { .. })
        ));
        let akp = TeePubKey::AKP {
            alg: "ML-KEM-768".into(),
            public_key: "AA".into(),
        };
        assert!(matches!(
            check_tee_key(&akp),
            Err(JweError::UnsupportedAlgorithm { .. })
        ));
    }
}
