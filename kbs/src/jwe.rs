//! Resources leave the broker as a JWE (flattened JSON serialization) encrypted to the attested
//! guest's ephemeral public key: `RSA-OAEP-256` or `ECDH-ES+A256KW` (P-256) for the content key,
//! `A256GCM` for the content, exactly the two shapes that Trustee's broker produces. The JOSE is
//! `tsuba_protocols::jose`, the one the guest opens it with; this module reads the guest's key
//! from the KBS protocol's `tee-pubkey` and holds it to what a broker encrypts to.

use kbs_types::TeePubKey;
use tsuba_protocols::jose::{self, KeyWrap, PublicKey, RSA_TEE_KEY_BITS};

pub use jose::FlattenedJwe;

/// Errors while encrypting a resource to a TEE key.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// The key's `alg` (or curve) is not one this broker encrypts to.
    #[error("unsupported tee key algorithm {alg:?}")]
    UnsupportedAlgorithm {
        /// The `alg` or `crv` value the guest sent (at most 40 characters).
        alg: String,
    },
    /// The key's members do not make a key.
    #[error("tee key is invalid")]
    Key(#[source] jose::KeyError),
    /// Encryption failed.
    #[error("jwe encryption failed")]
    Encrypt(#[source] jose::JweError),
}

/// The key and key management a resource for `key` is encrypted with: the guest's own choice,
/// when it is one of the two Trustee's broker supports.
pub(crate) fn tee_key(key: &TeePubKey) -> Result<(PublicKey, KeyWrap), JweError> {
    let unsupported = |alg: &str| JweError::UnsupportedAlgorithm {
        alg: alg.chars().take(40).collect(),
    };
    match key {
        TeePubKey::EC { crv, alg, x, y } => {
            if alg != KeyWrap::EcdhEsA256Kw.name() {
                return Err(unsupported(alg));
            }
            if crv != "P-256" {
                return Err(unsupported(crv));
            }
            let key = PublicKey::from_ec_jwk(crv, x, y).map_err(JweError::Key)?;
            Ok((key, KeyWrap::EcdhEsA256Kw))
        }
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != KeyWrap::RsaOaep256.name() {
                return Err(unsupported(alg));
            }
            let key =
                PublicKey::from_rsa_jwk(k_mod, k_exp, RSA_TEE_KEY_BITS).map_err(JweError::Key)?;
            Ok((key, KeyWrap::RsaOaep256))
        }
        TeePubKey::AKP { alg, .. } => Err(unsupported(alg)),
    }
}

/// Validates that `key` is a key this broker can encrypt to, without encrypting anything.
pub(crate) fn check_tee_key(key: &TeePubKey) -> Result<(), JweError> {
    tee_key(key).map(|_| ())
}

/// Encrypts `plaintext` to `key`.
pub(crate) fn encrypt(key: &TeePubKey, plaintext: &[u8]) -> Result<FlattenedJwe, JweError> {
    let (key, wrap) = tee_key(key)?;
    jose::encrypt_flattened(plaintext, &key, wrap).map_err(JweError::Encrypt)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tsuba_protocols::jose::PrivateKey;

    use super::*;

    fn tee_pub_key(key: &PrivateKey, alg: &str) -> TeePubKey {
        serde_json::from_value(key.public_key().to_jwk(alg)).unwrap()
    }

    #[test]
    fn resources_open_with_the_guests_key_of_either_kind() {
        for (key, alg) in [
            (PrivateKey::generate_p256(), "ECDH-ES+A256KW"),
            (PrivateKey::generate_rsa(2048).unwrap(), "RSA-OAEP-256"),
        ] {
            let jwe = encrypt(&tee_pub_key(&key, alg), b"resource bytes").unwrap();
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap()).unwrap();
            assert_eq!(
                (header["alg"].as_str(), header["enc"].as_str()),
                (Some(alg), Some("A256GCM"))
            );
            let body = serde_json::to_vec(&jwe).unwrap();
            assert_eq!(
                &jose::decrypt(&body, &[key]).unwrap()[..],
                b"resource bytes"
            );
        }
    }

    #[test]
    fn bad_keys_are_refused() {
        let ec = tee_pub_key(&PrivateKey::generate_p256(), "ECDH-ES+A256KW");
        let TeePubKey::EC { x, y, .. } = &ec else {
            unreachable!()
        };
        let with = |crv: &str, alg: &str, x: &str, y: &str| TeePubKey::EC {
            crv: crv.into(),
            alg: alg.into(),
            x: x.into(),
            y: y.into(),
        };
        assert!(matches!(
            check_tee_key(&with("P-256", "ECDH-ES", x, y)),
            Err(JweError::UnsupportedAlgorithm { alg }) if alg == "ECDH-ES"
        ));
        assert!(matches!(
            check_tee_key(&with("P-384", "ECDH-ES+A256KW", x, y)),
            Err(JweError::UnsupportedAlgorithm { alg }) if alg == "P-384"
        ));
        let mut flipped = URL_SAFE_NO_PAD.decode(y).unwrap();
        flipped[31] ^= 1;
        assert!(matches!(
            check_tee_key(&with(
                "P-256",
                "ECDH-ES+A256KW",
                x,
                &URL_SAFE_NO_PAD.encode(flipped)
            )),
            Err(JweError::Key(jose::KeyError::InvalidPoint))
        ));
        assert!(matches!(
            check_tee_key(&with("P-256", "ECDH-ES+A256KW", "!!", "??")),
            Err(JweError::Key(jose::KeyError::Encoding(_)))
        ));
        let rsa = |k_mod: Vec<u8>| TeePubKey::RSA {
            alg: "RSA-OAEP-256".into(),
            k_mod: URL_SAFE_NO_PAD.encode(k_mod),
            k_exp: "AQAB".into(),
        };
        assert!(matches!(
            check_tee_key(&rsa(vec![0xff; 64])),
            Err(JweError::Key(jose::KeyError::RsaSize { bits: 512, .. }))
        ));
        assert!(matches!(
            check_tee_key(&rsa(vec![0xff; 2048])),
            Err(JweError::Key(jose::KeyError::RsaSize { .. }))
        ));
        let long = TeePubKey::AKP {
            alg: "M".repeat(1000),
            public_key: "AA".into(),
        };
        assert!(matches!(
            check_tee_key(&long),
            Err(JweError::UnsupportedAlgorithm { alg }) if alg.len() == 40
        ));
    }
}
