//! The ephemeral key pair of one attestation session, and opening the JWE that the broker
//! encrypts resources to it with (`ECDH-ES+A256KW` or `RSA-OAEP-256`, content `A256GCM`).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use tsuba_protocols::jose::concat_kdf;
use zeroize::Zeroizing;

/// Largest JWE part accepted (base64url characters).
const MAX_JWE_PART: usize = 16 * 1024 * 1024;

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
    Generate(#[source] rsa::Error),
    /// The JWE is not well formed.
    #[error("jwe is malformed: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The JWE uses an algorithm other than the one this key expects.
    #[error("jwe algorithm {alg:?}/{enc:?} does not match this key")]
    Algorithm {
        /// The `alg` header.
        alg: String,
        /// The `enc` header.
        enc: String,
    },
    /// Unwrapping the content key or decrypting the content failed (tampering or a wrong key).
    #[error("jwe decryption failed at {step}")]
    Decrypt {
        /// Which step.
        step: &'static str,
    },
}

enum Private {
    Ec(p256::SecretKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// An ephemeral key pair; the private half never leaves this value.
pub struct TeeKey {
    private: Private,
}

impl std::fmt::Debug for TeeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.private {
            Private::Ec(_) => "ec-p256",
            Private::Rsa(_) => "rsa-2048",
        };
        f.debug_struct("TeeKey")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// A JWE in flattened JSON serialization.
#[derive(Debug, Deserialize)]
struct FlattenedJwe {
    protected: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
    tag: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    enc: String,
    #[serde(default)]
    epk: Option<Value>,
}

impl TeeKey {
    /// Generates a fresh key pair.
    pub fn generate(kind: TeeKeyKind) -> Result<Self, TeeKeyError> {
        let private = match kind {
            TeeKeyKind::EcP256 => Private::Ec(p256::SecretKey::random(&mut OsRng)),
            TeeKeyKind::Rsa2048 => Private::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut OsRng, 2048).map_err(TeeKeyError::Generate)?,
            )),
        };
        Ok(Self { private })
    }

    /// The public key as the JWK sent in the runtime data (`tee-pubkey`).
    pub fn public_jwk(&self) -> Value {
        match &self.private {
            Private::Ec(secret) => {
                let point = p256::EncodedPoint::from(secret.public_key());
                let coordinate = |c: Option<&p256::FieldBytes>| {
                    c.map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                        .unwrap_or_default()
                };
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW",
                    "x": coordinate(point.x()), "y": coordinate(point.y()),
                })
            }
            Private::Rsa(private) => serde_json::json!({
                "kty": "RSA", "alg": "RSA-OAEP-256",
                "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            }),
        }
    }

    /// Opens a flattened-JSON JWE (the broker's resource response body).
    pub fn decrypt(&self, jwe_json: &[u8]) -> Result<Zeroizing<Vec<u8>>, TeeKeyError> {
        let jwe: FlattenedJwe =
            serde_json::from_slice(jwe_json).map_err(|_| TeeKeyError::Malformed {
                what: "not a flattened json jwe",
            })?;
        let decode = |what: &'static str, part: &str| {
            if part.len() > MAX_JWE_PART {
                return Err(TeeKeyError::Malformed { what });
            }
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TeeKeyError::Malformed { what })
        };
        let header: Header = serde_json::from_slice(&decode("protected", &jwe.protected)?)
            .map_err(|_| TeeKeyError::Malformed {
                what: "protected header",
            })?;
        let wrong_alg = || TeeKeyError::Algorithm {
            alg: header.alg.clone(),
            enc: header.enc.clone(),
        };
        if header.enc != "A256GCM" {
            return Err(wrong_alg());
        }
        let encrypted_key = decode("encrypted_key", &jwe.encrypted_key)?;
        let cek: Zeroizing<Vec<u8>> = match (&self.private, header.alg.as_str()) {
            (Private::Ec(secret), "ECDH-ES+A256KW") => {
                let epk = header
                    .epk
                    .as_ref()
                    .ok_or(TeeKeyError::Malformed { what: "no epk" })?;
                let epk = p256::PublicKey::from_jwk_str(&epk.to_string())
                    .map_err(|_| TeeKeyError::Malformed { what: "epk" })?;
                let shared =
                    p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), epk.as_affine());
                let kek =
                    Zeroizing::new(concat_kdf(&shared.raw_secret_bytes()[..], "ECDH-ES+A256KW"));
                let cek = aes_kw::KekAes256::from(*kek)
                    .unwrap_vec(&encrypted_key)
                    .map_err(|_| TeeKeyError::Decrypt { step: "key unwrap" })?;
                Zeroizing::new(cek)
            }
            (Private::Rsa(private), "RSA-OAEP-256") => Zeroizing::new(
                private
                    .decrypt(rsa::Oaep::new::<Sha256>(), &encrypted_key)
                    .map_err(|_| TeeKeyError::Decrypt { step: "rsa-oaep" })?,
            ),
            _ => return Err(wrong_alg()),
        };
        let cipher = Aes256Gcm::new_from_slice(&cek).map_err(|_| TeeKeyError::Decrypt {
            step: "content key length",
        })?;
        let iv: [u8; 12] = decode("iv", &jwe.iv)?
            .try_into()
            .map_err(|_| TeeKeyError::Malformed { what: "iv length" })?;
        let mut sealed = decode("ciphertext", &jwe.ciphertext)?;
        let tag = decode("tag", &jwe.tag)?;
        if tag.len() != 16 {
            return Err(TeeKeyError::Malformed { what: "tag length" });
        }
        sealed.extend_from_slice(&tag);
        cipher
            .decrypt(
                &Nonce::from(iv),
                Payload {
                    msg: &sealed,
                    aad: jwe.protected.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| TeeKeyError::Decrypt { step: "aes-gcm" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ECDH-ES+A256KW JWE made independently with Python `cryptography` (P-256 ECDH, Concat
    /// KDF, AES key wrap, AES-256-GCM with the protected header as AAD) for the fixed private key
    /// below; the plaintext is `interop-secret-0123456789\n`.
    const EC_PRIVATE_D: &str = "VMwDN1lJT9kxWnSOBwU6lK8YEpyi_l5TAF65qWDDrB0";
    const EC_JWE: &str = r#"{"protected":"eyJhbGciOiJFQ0RILUVTK0EyNTZLVyIsImVuYyI6IkEyNTZHQ00iLCJlcGsiOnsiY3J2IjoiUC0yNTYiLCJrdHkiOiJFQyIsIngiOiJVTkpkR3Q4TURUYnRwaDlyUXNvLXF2THZvbFF6bm1ySV9tWVNJLTZzTHNJIiwieSI6IkZrNWZiOFlURm04REhfVTdkajJYLUhsV0wxQVM1QUs0SGxyUTE3eF9ZZWMifX0","encrypted_key":"kfyb_BEa5C1G3fCFiGEPCf4nw_7sd5EFYd98aG-jHZWZqvBolQkMfw","iv":"9WiuEChvLK7AtO1k","ciphertext":"_LMTkaTfVzQV1ctzxyY0_oZkLvL18n73-I4","tag":"M9ZnQj26MIQ4UqocEEPyOA"}"#;
    /// An RSA-OAEP-256 JWE made the same way, for the PKCS#8 key below.
    const RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDWnCroMcS8RyCP\nz2u9RaqDX1iwj9SM788gP990dcoxjeitPCowEpIlxrJmpQNsiEziMTY0tChGgt4l\nnTM8zPENJlwYc2bU/eCEWFjGsyCx4F4OCEvAqi13lL2YgEqejZSWdy/ADEf1LY3t\nCcQkHpANq9l9UVEMUGPaX3Zy8xgW4/DWzHV4UFgi2iVzsaI7OZviwrcQhiaC0rEx\nxME6F0ViS4Di2rWhVDneJ7kVeXICkknVnxtagQQ3GtJ/N3EXjCnM0Z3CUF2HZMMF\nsSFP0aL1/EGMIDl2f+C7hhwZr9IxX53QQO8jgZhTiZQhbnegkxm0iOoMLA/lyWlk\n5hkpzMlPAgMBAAECggEAKt0HHtgt3JLyOHbrpGKBM3r8KkuX3sxY2K6ZMVgDWdFn\nmw4MuQxEf2IHqMOlguxYOscsdetTrf2eY/HZVXfzXzZ9p26JJ9pLGPPSS2FkktJm\nxrO2eZUjvqIJGifpf3B0sHa+pUNurdP66FCOic5G5EwiBMsUfnqh7vApJr1R3uQr\nQbXCDh0+LTBCCrS1SZi0Rxvd1O73Yrix6WEd4n0K4OSR6cMnRlNLvE6R8bcy9z8s\ngrV9Gnf4jL9A7Y/uqu0SzIRoA9CtkrIY1zz5TgPhmye8u0DGQPGny6ovn7TmJk/I\nwyxhX54bb51a8kjkwirxlYPpwbiSgoMl0setT+r3yQKBgQDwUmpqGiCKaT3LgvID\nrhZtjc/2zsCmMHFIfpc03zgB79R8aQZZaMcV2IA2th/vijrDaaoA07czeJFeBMO8\nV6h3F29cSKQZ6nh7DKwaLTaxKN7Sx3JE6LSI1I/r3j//US0++9nA4/510anInYHY\nUqPV7ok5rDt1vftiofArShwFyQKBgQDknFdAz80XJVXrcLqc2ob59ccg+TTsvuyH\noP+fKFipFGxDuojlcpjaxFDkrGduYCp4DxP/pTV13Yem+tTJKSdh+4X6Kem563QU\nPHVEuPN9TijTxiVu0vi2Y4ZXn5dVQLcRVVMJDKmnDhZPjl8IpAsFnDbCDWFqgGhe\ncKH3YwFCVwKBgQDtwUugPsr0xFurbJgMRf3QUt1tGm0DvadFhmAHodLiL6hzkOAE\nMqHLng5ykkoUDRhH3dCf0tVLabu/XU1clwiHEbtNfFxFe2/IpOfbWeHi8UFJHKKT\nQ/nf6ROd0ZpU+LWfu0BaEfXcEBo97H3aSx/ldYFzek61FMiQcw+NdFs26QKBgHfC\nXwMY2PuzF1uLZncdE3CGjJZ9dng/XHGAqeianjeU91JTubtZWTHhfe8NUfHEdvsG\nCxf1WBgywQl8hVQMNxFhTkJLCqHW8qxXL6ecrBGMjF7Egn+YDaqeYJYuiHyktkJi\nTGmFNKrK+m0azDYemZeKyjTGBa5hLkuq/W43c0VpAoGARG21GZxmyVhp+LCKCyt0\nCoCqv3N4GjW7uJIisNRtPFPx1EcJSW4BlzHFBjOZjM8J7/4VfVXKkMEao16Eda33\nLYmZDpMDWq9QqH2WXXcJ1PVGmS6Di5rMiIpyk1T1p8cSWtGvOtQ2PVRbMltTMXSo\njcYUzfaegdp991P8lrJBzCw=\n-----END PRIVATE KEY-----\n";
    const RSA_JWE: &str = r#"{"protected":"eyJhbGciOiJSU0EtT0FFUC0yNTYiLCJlbmMiOiJBMjU2R0NNIn0","encrypted_key":"WHnQCiRYWeJFInu-tBMyQvL0I8Q4dGdY1dJJjGOJ8i3lfHuYsCZm4i52cvS8236XJGiMdfBXP0CB-zmAJFG6Yvbw5eGaWjej0JcD3b_LHDZrplQW1q19jmz0Ozb5kJnehYu1knBevaXl5U6pxQTrXqBhiXjKtOm7szd88LKegi0LcZE4Y8IBhqRu8lEl8YKl1uUxLNe_LfTMnN8sE-W3xGxMJULa1bZdlyesnfjfIV8xC8JmPIpNF6ckv46swToHwprHo5V1BDeABIMG5XwlqzTkMX-RuD3yVjyDY2pqD5HU4IStVV_SXvxstBphj1yo6SkhkswLHl7482ipYf3zvA","iv":"EFfSOzTo_NlzIOHL","ciphertext":"MxOPoMjBxqPzqIkhITq0mZcsO-4iqaC4a08","tag":"3LCMpe89PLwwYklK8rfBgw"}"#;

    #[test]
    fn opens_independently_made_ec_jwe() {
        let d = URL_SAFE_NO_PAD.decode(EC_PRIVATE_D).unwrap();
        let key = TeeKey {
            private: Private::Ec(p256::SecretKey::from_slice(&d).unwrap()),
        };
        assert_eq!(
            &key.decrypt(EC_JWE.as_bytes()).unwrap()[..],
            b"interop-secret-0123456789\n"
        );
    }

    #[test]
    fn opens_independently_made_rsa_jwe() {
        use rsa::pkcs8::DecodePrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PRIVATE_PEM).unwrap();
        let key = TeeKey {
            private: Private::Rsa(Box::new(private)),
        };
        assert_eq!(
            &key.decrypt(RSA_JWE.as_bytes()).unwrap()[..],
            b"interop-secret-0123456789\n"
        );
    }

    #[test]
    fn tampered_or_foreign_jwe_is_refused() {
        let d = URL_SAFE_NO_PAD.decode(EC_PRIVATE_D).unwrap();
        let key = TeeKey {
            private: Private::Ec(p256::SecretKey::from_slice(&d).unwrap()),
        };
        let mut jwe: Value = serde_json::from_str(EC_JWE).unwrap();
        let mut ct = URL_SAFE_NO_PAD
            .decode(jwe["ciphertext"].as_str().unwrap())
            .unwrap();
        ct[0] ^= 1;
        jwe["ciphertext"] = URL_SAFE_NO_PAD.encode(ct).into();
        assert!(matches!(
            key.decrypt(jwe.to_string().as_bytes()),
            Err(TeeKeyError::Decrypt { step: "aes-gcm" })
        ));
        let other = TeeKey::generate(TeeKeyKind::EcP256).unwrap();
        assert!(matches!(
            other.decrypt(EC_JWE.as_bytes()),
            Err(TeeKeyError::Decrypt { .. })
        ));
        // An RSA JWE offered to an EC key names the wrong algorithm.
        assert!(matches!(
            key.decrypt(RSA_JWE.as_bytes()),
            Err(TeeKeyError::Algorithm { .. })
        ));
        for bad in [
            "",
            "{}",
            "[]",
            r#"{"protected":"!!","encrypted_key":"","iv":"","ciphertext":"","tag":""}"#,
        ] {
            assert!(
                matches!(
                    key.decrypt(bad.as_bytes()),
                    Err(TeeKeyError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn public_jwk_shapes() {
        let ec = TeeKey::generate(TeeKeyKind::EcP256).unwrap().public_jwk();
        assert_eq!(ec["alg"], "ECDH-ES+A256KW");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(ec["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let rsa = TeeKey::generate(TeeKeyKind::Rsa2048).unwrap().public_jwk();
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
