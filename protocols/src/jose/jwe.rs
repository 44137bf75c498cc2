//! JWE (RFC 7516) in its two JSON serializations: the flattened one that a KBS broker (Trustee's
//! or tsuba's) returns a resource in, with the key management in the protected header, and the
//! general one that containers/ocicrypt writes for `org.opencontainers.image.enc.keys.jwe`, with
//! one recipient per key. Content encryption is `A256GCM`; key management `RSA-OAEP` (SHA-1, what
//! ocicrypt writes for RSA), `RSA-OAEP-256` or `ECDH-ES+A256KW` (RFC 7518).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::kdf::concat_kdf;
use super::keys::{PrivateKey, PublicKey};

/// Longest JWE accepted for decryption (bytes of JSON): a resource or a layer's key options.
pub const MAX_JWE_LEN: usize = 32 * 1024 * 1024;

/// Most recipients considered in one JWE (each costs a private-key operation per key).
pub const MAX_RECIPIENTS: usize = 64;

/// The content encryption: the only one written or read.
const ENC: &str = "A256GCM";

/// GCM's tag and nonce lengths.
const TAG_LEN: usize = 16;
const IV_LEN: usize = 12;

/// Errors from JWE encryption or decryption.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// The JWE is not JSON of a JWE's shape, or a member does not decode.
    #[error("jwe is malformed: {what}")]
    Malformed {
        /// What was wrong.
        what: &'static str,
    },
    /// The JWE is longer than [`MAX_JWE_LEN`].
    #[error("jwe is {len} bytes, more than the {MAX_JWE_LEN} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The JWE has more recipients than [`MAX_RECIPIENTS`].
    #[error("jwe has {0} recipients, more than the {MAX_RECIPIENTS} accepted")]
    TooManyRecipients(usize),
    /// The content encryption is not `A256GCM`, or a `zip` is asked for.
    #[error("unsupported jwe content encryption {0:?}, only A256GCM")]
    UnsupportedEnc(String),
    /// The key cannot be used with the key management asked for.
    #[error("{alg} cannot wrap a key for this {key} key")]
    KeyMismatch {
        /// The key management algorithm.
        alg: &'static str,
        /// The kind of key.
        key: &'static str,
    },
    /// No recipient could be unwrapped with any of the keys given.
    #[error("none of the {keys} private keys unwraps any of the {recipients} jwe recipients")]
    NoMatchingKey {
        /// Keys tried.
        keys: usize,
        /// Recipients in the JWE.
        recipients: usize,
    },
    /// The content did not authenticate under the unwrapped key: tampering.
    #[error("jwe content authentication failed")]
    Authentication,
    /// A primitive failed while encrypting (no randomness, a refused key).
    #[error("jwe {step} failed")]
    Crypto {
        /// Which step.
        step: &'static str,
    },
}

/// Key management algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWrap {
    /// RSAES-OAEP with SHA-1: what ocicrypt writes for RSA recipients.
    RsaOaep,
    /// RSAES-OAEP with SHA-256: what a KBS broker uses for an RSA TEE key.
    RsaOaep256,
    /// ECDH-ES with an ephemeral key, Concat KDF, AES-256 key wrap.
    EcdhEsA256Kw,
}

impl KeyWrap {
    /// The JWA name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep => "RSA-OAEP",
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::EcdhEsA256Kw => "ECDH-ES+A256KW",
        }
    }
}

/// A JWE in the flattened JSON serialization with every header in `protected`, as a KBS broker
/// returns a resource; every member is base64url without padding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlattenedJwe {
    /// The protected header.
    pub protected: String,
    /// The wrapped content-encryption key.
    pub encrypted_key: String,
    /// The 96-bit GCM nonce.
    pub iv: String,
    /// The encrypted content.
    pub ciphertext: String,
    /// The GCM tag.
    pub tag: String,
}

/// One recipient of the general serialization.
#[derive(Debug, Deserialize, Serialize)]
struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted_key: Option<String>,
}

/// Either JSON serialization, as read.
#[derive(Debug, Deserialize, Serialize)]
struct Jwe {
    protected: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unprotected: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<Recipient>,
    // Flattened serialization: the one recipient at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aad: Option<String>,
    iv: String,
    ciphertext: String,
    tag: String,
}

/// Encrypts `plaintext` to `recipient` in the flattened serialization, `alg`, `enc` and (for
/// ECDH-ES) `epk` in the protected header, members in lexical order.
pub fn encrypt_flattened(
    plaintext: &[u8],
    recipient: &PublicKey,
    wrap: KeyWrap,
) -> Result<FlattenedJwe, JweError> {
    let cek = fresh_cek()?;
    let wrapped = wrap_cek(recipient, wrap, &cek)?;
    let header = match &wrapped.epk {
        // Written by hand for a fixed member order: the header is the GCM AAD as sent.
        Some(epk) => format!(
            r#"{{"alg":"{}","enc":"{ENC}","epk":{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}}}"#,
            wrap.name(),
            epk.crv,
            epk.x,
            epk.y
        ),
        None => format!(r#"{{"alg":"{}","enc":"{ENC}"}}"#, wrap.name()),
    };
    let protected = URL_SAFE_NO_PAD.encode(header);
    let sealed = seal(&cek, &protected, plaintext)?;
    Ok(FlattenedJwe {
        protected,
        encrypted_key: URL_SAFE_NO_PAD.encode(wrapped.encrypted_key),
        iv: sealed.iv,
        ciphertext: sealed.ciphertext,
        tag: sealed.tag,
    })
}

/// Encrypts `plaintext` for every recipient in the general serialization, as ocicrypt does:
/// `{"enc":"A256GCM"}` protected, `alg` (`RSA-OAEP` for RSA keys, `ECDH-ES+A256KW` for EC keys)
/// and `epk` in each recipient's header.
pub fn encrypt_general(plaintext: &[u8], recipients: &[PublicKey]) -> Result<Vec<u8>, JweError> {
    let cek = fresh_cek()?;
    let protected = URL_SAFE_NO_PAD.encode(format!(r#"{{"enc":"{ENC}"}}"#));
    let mut out = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let wrap = match recipient {
            PublicKey::Rsa(_) => KeyWrap::RsaOaep,
            PublicKey::P256(_) | PublicKey::P384(_) | PublicKey::P521(_) => KeyWrap::EcdhEsA256Kw,
        };
        let wrapped = wrap_cek(recipient, wrap, &cek)?;
        let mut header = Map::new();
        header.insert("alg".into(), wrap.name().into());
        if let Some(epk) = wrapped.epk {
            header.insert(
                "epk".into(),
                serde_json::json!({"kty": "EC", "crv": epk.crv, "x": epk.x, "y": epk.y}),
            );
        }
        out.push(Recipient {
            header: Some(header),
            encrypted_key: Some(URL_SAFE_NO_PAD.encode(wrapped.encrypted_key)),
        });
    }
    let sealed = seal(&cek, &protected, plaintext)?;
    let jwe = Jwe {
        protected,
        unprotected: None,
        recipients: out,
        header: None,
        encrypted_key: None,
        aad: None,
        iv: sealed.iv,
        ciphertext: sealed.ciphertext,
        tag: sealed.tag,
    };
    serde_json::to_vec(&jwe).map_err(|_| JweError::Crypto {
        step: "serialization",
    })
}

/// Decrypts a JWE in either JSON serialization with the first of `keys` that unwraps one of its
/// recipients, and returns the plaintext.
pub fn decrypt(jwe: &[u8], keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>, JweError> {
    if jwe.len() > MAX_JWE_LEN {
        return Err(JweError::TooLarge { len: jwe.len() });
    }
    let jwe: Jwe = serde_json::from_slice(jwe).map_err(|_| JweError::Malformed {
        what: "not a jwe in json serialization",
    })?;
    let protected: Map<String, Value> = serde_json::from_slice(&b64("protected", &jwe.protected)?)
        .map_err(|_| JweError::Malformed {
            what: "protected header",
        })?;
    let mut recipients = jwe.recipients;
    if recipients.is_empty() {
        recipients.push(Recipient {
            header: jwe.header,
            encrypted_key: jwe.encrypted_key,
        });
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(JweError::TooManyRecipients(recipients.len()));
    }
    // RFC 7516 section 7.2.1: a header member may sit in any of the three headers.
    let joint = |r: &Recipient, name: &str| -> Option<Value> {
        protected
            .get(name)
            .or_else(|| jwe.unprotected.as_ref().and_then(|u| u.get(name)))
            .or_else(|| r.header.as_ref().and_then(|h| h.get(name)))
            .cloned()
    };
    let iv: [u8; IV_LEN] = b64("iv", &jwe.iv)?
        .try_into()
        .map_err(|_| JweError::Malformed { what: "iv length" })?;
    let tag = b64("tag", &jwe.tag)?;
    if tag.len() != TAG_LEN {
        return Err(JweError::Malformed { what: "tag length" });
    }
    let mut sealed = b64("ciphertext", &jwe.ciphertext)?;
    sealed.extend_from_slice(&tag);
    let aad = match &jwe.aad {
        Some(extra) => format!("{}.{extra}", jwe.protected),
        None => jwe.protected.clone(),
    };

    for recipient in &recipients {
        let enc = joint(recipient, "enc");
        if enc.as_ref().and_then(Value::as_str) != Some(ENC) {
            return Err(JweError::UnsupportedEnc(
                enc.map(|v| v.to_string().chars().take(40).collect())
                    .unwrap_or_default(),
            ));
        }
        if joint(recipient, "zip").is_some() {
            return Err(JweError::UnsupportedEnc("zip".into()));
        }
        let Some(alg) = joint(recipient, "alg") else {
            continue;
        };
        let (Some(alg), Some(encrypted_key)) = (alg.as_str(), &recipient.encrypted_key) else {
            continue;
        };
        let encrypted_key = b64("encrypted_key", encrypted_key)?;
        for key in keys {
            let Some(cek) = unwrap_cek(alg, key, &encrypted_key, &|n| joint(recipient, n)) else {
                continue;
            };
            let cipher =
                Aes256Gcm::new_from_slice(&cek[..]).map_err(|_| JweError::Authentication)?;
            return cipher
                .decrypt(
                    &Nonce::from(iv),
                    Payload {
                        msg: &sealed,
                        aad: aad.as_bytes(),
                    },
                )
                .map(Zeroizing::new)
                .map_err(|_| JweError::Authentication);
        }
    }
    Err(JweError::NoMatchingKey {
        keys: keys.len(),
        recipients: recipients.len(),
    })
}

/// A content key: wiped when dropped.
fn fresh_cek() -> Result<Zeroizing<[u8; 32]>, JweError> {
    let mut cek = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(&mut cek[..])
        .map_err(|_| JweError::Crypto { step: "randomness" })?;
    Ok(cek)
}

/// The sender's ephemeral public key of ECDH-ES.
struct Epk {
    crv: &'static str,
    x: String,
    y: String,
}

/// A content key wrapped for one recipient.
struct Wrapped {
    encrypted_key: Vec<u8>,
    epk: Option<Epk>,
}

fn wrap_cek(recipient: &PublicKey, wrap: KeyWrap, cek: &[u8; 32]) -> Result<Wrapped, JweError> {
    let mismatch = |key| JweError::KeyMismatch {
        alg: wrap.name(),
        key,
    };
    match (wrap, recipient) {
        (KeyWrap::RsaOaep, PublicKey::Rsa(key)) => Ok(Wrapped {
            encrypted_key: key
                .encrypt(&mut OsRng, rsa::Oaep::new::<sha1::Sha1>(), cek)
                .map_err(|_| JweError::Crypto { step: "rsa-oaep" })?,
            epk: None,
        }),
        (KeyWrap::RsaOaep256, PublicKey::Rsa(key)) => Ok(Wrapped {
            encrypted_key: key
                .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), cek)
                .map_err(|_| JweError::Crypto {
                    step: "rsa-oaep-256",
                })?,
            epk: None,
        }),
        (KeyWrap::EcdhEsA256Kw, PublicKey::P256(key)) => {
            // The ephemeral key and the agreement through `ring`, about four times faster than
            // `p256` (the broker does one per resource it releases).
            let rng = ring::rand::SystemRandom::new();
            let ecdh = |_| JweError::Crypto { step: "ecdh" };
            let ephemeral =
                ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                    .map_err(ecdh)?;
            let epk = ephemeral.compute_public_key().map_err(ecdh)?;
            let peer = ring::agreement::UnparsedPublicKey::new(
                &ring::agreement::ECDH_P256,
                p256::EncodedPoint::from(key),
            );
            let kek = ring::agreement::agree_ephemeral(ephemeral, &peer, |shared| {
                concat_kdf(shared, KeyWrap::EcdhEsA256Kw.name(), b"", b"", 256)
            })
            .map_err(ecdh)?;
            let (Some(x), Some(y)) = (epk.as_ref().get(1..33), epk.as_ref().get(33..65)) else {
                return Err(JweError::Crypto {
                    step: "epk encoding",
                });
            };
            key_wrap(&kek, cek, "P-256", x, y)
        }
        (KeyWrap::EcdhEsA256Kw, PublicKey::P384(key)) => {
            let ephemeral = p384::SecretKey::random(&mut OsRng);
            let shared = p384::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), key.as_affine());
            let point = p384::EncodedPoint::from(ephemeral.public_key());
            ecdh_wrap(
                shared.raw_secret_bytes(),
                cek,
                "P-384",
                point.x(),
                point.y(),
            )
        }
        (KeyWrap::EcdhEsA256Kw, PublicKey::P521(key)) => {
            let ephemeral = p521::SecretKey::random(&mut OsRng);
            let shared = p521::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), key.as_affine());
            let point = p521::EncodedPoint::from(ephemeral.public_key());
            ecdh_wrap(
                shared.raw_secret_bytes(),
                cek,
                "P-521",
                point.x(),
                point.y(),
            )
        }
        (KeyWrap::EcdhEsA256Kw, PublicKey::Rsa(_)) => Err(mismatch("rsa")),
        (KeyWrap::RsaOaep | KeyWrap::RsaOaep256, _) => Err(mismatch("ec")),
    }
}

fn ecdh_wrap(
    shared: &[u8],
    cek: &[u8; 32],
    crv: &'static str,
    x: Option<&impl AsRef<[u8]>>,
    y: Option<&impl AsRef<[u8]>>,
) -> Result<Wrapped, JweError> {
    let (Some(x), Some(y)) = (x, y) else {
        return Err(JweError::Crypto {
            step: "epk encoding",
        });
    };
    let kek = concat_kdf(shared, KeyWrap::EcdhEsA256Kw.name(), b"", b"", 256);
    key_wrap(&kek, cek, crv, x.as_ref(), y.as_ref())
}

fn key_wrap(
    kek: &[u8; 32],
    cek: &[u8; 32],
    crv: &'static str,
    x: &[u8],
    y: &[u8],
) -> Result<Wrapped, JweError> {
    let encrypted_key = aes_kw::KekAes256::from(*kek)
        .wrap_vec(cek)
        .map_err(|_| JweError::Crypto { step: "key wrap" })?;
    Ok(Wrapped {
        encrypted_key,
        epk: Some(Epk {
            crv,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    })
}

/// The sealed content.
struct Sealed {
    iv: String,
    ciphertext: String,
    tag: String,
}

/// AES-256-GCM over `plaintext` with the protected header (as sent) as AAD.
fn seal(cek: &[u8; 32], protected: &str, plaintext: &[u8]) -> Result<Sealed, JweError> {
    let mut iv = [0u8; IV_LEN];
    OsRng
        .try_fill_bytes(&mut iv)
        .map_err(|_| JweError::Crypto { step: "randomness" })?;
    let mut sealed = Aes256Gcm::new(&(*cek).into())
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| JweError::Crypto { step: "aes-gcm" })?;
    let tag = sealed.split_off(sealed.len().saturating_sub(TAG_LEN));
    Ok(Sealed {
        iv: URL_SAFE_NO_PAD.encode(iv),
        ciphertext: URL_SAFE_NO_PAD.encode(sealed),
        tag: URL_SAFE_NO_PAD.encode(tag),
    })
}

fn b64(what: &'static str, s: &str) -> Result<Vec<u8>, JweError> {
    // Some writers pad; RFC 7515 base64url has none.
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| JweError::Malformed { what })
}

/// Unwraps the content key for one recipient with one key; `None` when this key does not fit.
fn unwrap_cek(
    alg: &str,
    key: &PrivateKey,
    encrypted_key: &[u8],
    header: &dyn Fn(&str) -> Option<Value>,
) -> Option<Zeroizing<Vec<u8>>> {
    let cek = match (alg, key) {
        ("RSA-OAEP", PrivateKey::Rsa(k)) => k
            .decrypt(rsa::Oaep::new::<sha1::Sha1>(), encrypted_key)
            .ok()?,
        ("RSA-OAEP-256", PrivateKey::Rsa(k)) => {
            k.decrypt(rsa::Oaep::new::<Sha256>(), encrypted_key).ok()?
        }
        ("ECDH-ES+A256KW", PrivateKey::P256(_) | PrivateKey::P384(_) | PrivateKey::P521(_)) => {
            let shared = ecdh_shared(key, &header("epk")?)?;
            let party = |name: &str| {
                header(name)
                    .and_then(|v| v.as_str().and_then(|s| b64("party info", s).ok()))
                    .unwrap_or_default()
            };
            let kek = concat_kdf(&shared, alg, &party("apu"), &party("apv"), 256);
            aes_kw::KekAes256::from(*kek)
                .unwrap_vec(encrypted_key)
                .ok()?
        }
        _ => return None,
    };
    let cek = Zeroizing::new(cek);
    (cek.len() == 32).then_some(cek)
}

/// The ECDH shared secret with the sender's ephemeral key (a JWK on the same curve as `key`).
fn ecdh_shared(key: &PrivateKey, epk: &Value) -> Option<Zeroizing<Vec<u8>>> {
    let member = |n: &str| epk.get(n).and_then(Value::as_str);
    if member("kty") != Some("EC") {
        return None;
    }
    let public = PublicKey::from_ec_jwk(member("crv")?, member("x")?, member("y")?).ok()?;
    let shared = match (key, public) {
        (PrivateKey::P256(sk), PublicKey::P256(pk)) => {
            p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                .raw_secret_bytes()
                .to_vec()
        }
        (PrivateKey::P384(sk), PublicKey::P384(pk)) => {
            p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                .raw_secret_bytes()
                .to_vec()
        }
        (PrivateKey::P521(sk), PublicKey::P521(pk)) => {
            p521::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine())
                .raw_secret_bytes()
                .to_vec()
        }
        _ => return None,
    };
    Some(Zeroizing::new(shared))
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

    fn ec_interop_key() -> PrivateKey {
        let d = URL_SAFE_NO_PAD.decode(EC_PRIVATE_D).unwrap();
        PrivateKey::P256(p256::SecretKey::from_slice(&d).unwrap())
    }

    #[test]
    fn opens_independently_made_flattened_jwes() {
        assert_eq!(
            &decrypt(EC_JWE.as_bytes(), &[ec_interop_key()]).unwrap()[..],
            b"interop-secret-0123456789\n"
        );
        let rsa = PrivateKey::from_pem(RSA_PRIVATE_PEM).unwrap();
        assert_eq!(
            &decrypt(RSA_JWE.as_bytes(), &[rsa]).unwrap()[..],
            b"interop-secret-0123456789\n"
        );
        // An RSA JWE offered to an EC key, and the other way round: no key fits.
        assert!(matches!(
            decrypt(RSA_JWE.as_bytes(), &[ec_interop_key()]),
            Err(JweError::NoMatchingKey {
                keys: 1,
                recipients: 1
            })
        ));
    }

    #[test]
    fn flattened_round_trips_with_every_header_protected() {
        let ec = PrivateKey::generate_p256();
        let jwe = encrypt_flattened(b"resource", &ec.public_key(), KeyWrap::EcdhEsA256Kw).unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap()).unwrap();
        assert_eq!(header["alg"], "ECDH-ES+A256KW");
        assert_eq!(header["enc"], "A256GCM");
        assert_eq!(header["epk"]["crv"], "P-256");
        let body = serde_json::to_vec(&jwe).unwrap();
        assert_eq!(
            &decrypt(&body, std::slice::from_ref(&ec)).unwrap()[..],
            b"resource"
        );

        let rsa = PrivateKey::generate_rsa(2048).unwrap();
        let jwe = encrypt_flattened(b"secret", &rsa.public_key(), KeyWrap::RsaOaep256).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&jwe.protected).unwrap(),
            br#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#
        );
        let body = serde_json::to_vec(&jwe).unwrap();
        assert_eq!(
            &decrypt(&body, std::slice::from_ref(&rsa)).unwrap()[..],
            b"secret"
        );

        // A changed protected header is a changed AAD.
        let mut tampered = jwe.clone();
        tampered.protected = URL_SAFE_NO_PAD.encode(br#"{"enc":"A256GCM","alg":"RSA-OAEP-256"}"#);
        let body = serde_json::to_vec(&tampered).unwrap();
        assert!(matches!(
            decrypt(&body, std::slice::from_ref(&rsa)),
            Err(JweError::Authentication)
        ));
        // Key and algorithm must agree.
        assert!(matches!(
            encrypt_flattened(b"x", &rsa.public_key(), KeyWrap::EcdhEsA256Kw),
            Err(JweError::KeyMismatch { key: "rsa", .. })
        ));
        assert!(matches!(
            encrypt_flattened(b"x", &ec.public_key(), KeyWrap::RsaOaep256),
            Err(JweError::KeyMismatch { key: "ec", .. })
        ));
    }

    #[test]
    fn general_round_trips_for_each_recipient_kind() {
        let keys = [
            PrivateKey::generate_rsa(2048).unwrap(),
            PrivateKey::generate_p256(),
            PrivateKey::P384(p384::SecretKey::random(&mut OsRng)),
            PrivateKey::P521(p521::SecretKey::random(&mut OsRng)),
        ];
        let publics: Vec<_> = keys.iter().map(PrivateKey::public_key).collect();
        let jwe = encrypt_general(b"layer options", &publics).unwrap();
        let parsed: Value = serde_json::from_slice(&jwe).unwrap();
        // ocicrypt's shape: RSA recipients get RSA-OAEP (SHA-1).
        assert_eq!(parsed["recipients"][0]["header"]["alg"], "RSA-OAEP");
        assert_eq!(parsed["recipients"][3]["header"]["epk"]["crv"], "P-521");
        for key in &keys {
            assert_eq!(
                &decrypt(&jwe, std::slice::from_ref(key)).unwrap()[..],
                b"layer options"
            );
        }
        assert!(matches!(
            decrypt(&jwe, &[PrivateKey::generate_p256()]),
            Err(JweError::NoMatchingKey {
                keys: 1,
                recipients: 4
            })
        ));
    }

    #[test]
    fn ephemeral_keys_of_the_wrong_shape_are_refused() {
        let key = PrivateKey::P521(p521::SecretKey::random(&mut OsRng));
        let jwe = encrypt_general(b"opts", &[key.public_key()]).unwrap();
        let parsed: Value = serde_json::from_slice(&jwe).unwrap();
        let x = URL_SAFE_NO_PAD
            .decode(
                parsed["recipients"][0]["header"]["epk"]["x"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(x.len(), 66);
        for (member, value) in [
            ("x", URL_SAFE_NO_PAD.encode(&x[1..])),
            ("x", URL_SAFE_NO_PAD.encode([0xffu8; 66])),
            ("crv", "P-384".to_owned()),
            ("kty", "OKP".to_owned()),
        ] {
            let mut bad = parsed.clone();
            bad["recipients"][0]["header"]["epk"][member] = value.into();
            let bad = serde_json::to_vec(&bad).unwrap();
            assert!(
                matches!(
                    decrypt(&bad, std::slice::from_ref(&key)),
                    Err(JweError::NoMatchingKey { .. })
                ),
                "{member}"
            );
        }
    }

    #[test]
    fn tampered_malformed_and_oversized_jwes_are_refused() {
        let key = PrivateKey::generate_p256();
        let jwe = encrypt_general(b"secret", &[key.public_key()]).unwrap();
        let parsed: Value = serde_json::from_slice(&jwe).unwrap();
        let refused = |value: &Value| {
            decrypt(
                &serde_json::to_vec(value).unwrap(),
                std::slice::from_ref(&key),
            )
        };

        let mut flipped = URL_SAFE_NO_PAD
            .decode(parsed["ciphertext"].as_str().unwrap())
            .unwrap();
        flipped[0] ^= 1;
        let mut bad = parsed.clone();
        bad["ciphertext"] = URL_SAFE_NO_PAD.encode(&flipped).into();
        assert!(matches!(refused(&bad), Err(JweError::Authentication)));

        let mut bad = parsed.clone();
        bad["protected"] = URL_SAFE_NO_PAD.encode(br#"{"enc":"A256GCM" }"#).into();
        assert!(matches!(refused(&bad), Err(JweError::Authentication)));

        let mut bad = parsed.clone();
        bad["protected"] = URL_SAFE_NO_PAD.encode(br#"{"enc":"A128CBC-HS256"}"#).into();
        assert!(matches!(refused(&bad), Err(JweError::UnsupportedEnc(_))));

        let mut bad = parsed.clone();
        bad["recipients"][0]["header"]["zip"] = "DEF".into();
        assert!(matches!(refused(&bad), Err(JweError::UnsupportedEnc(_))));

        for (member, value) in [
            ("iv", "AAAA"),
            ("tag", "AAAA"),
            ("ciphertext", "!!"),
            ("protected", "!!"),
        ] {
            let mut bad = parsed.clone();
            bad[member] = value.into();
            assert!(
                matches!(refused(&bad), Err(JweError::Malformed { .. })),
                "{member}"
            );
        }
        for body in [&b""[..], b"{not json", b"[]", b"{}"] {
            assert!(matches!(
                decrypt(body, std::slice::from_ref(&key)),
                Err(JweError::Malformed { .. })
            ));
        }

        let mut many = parsed.clone();
        let one = parsed["recipients"][0].clone();
        many["recipients"] = Value::Array(vec![one; MAX_RECIPIENTS + 1]);
        assert!(
            matches!(refused(&many), Err(JweError::TooManyRecipients(n)) if n == MAX_RECIPIENTS + 1)
        );

        let huge = vec![b' '; MAX_JWE_LEN + 1];
        assert!(matches!(
            decrypt(&huge, &[key]),
            Err(JweError::TooLarge { .. })
        ));
    }

    #[test]
    fn rsa_oaep_256_recipients_made_by_hand_decrypt() {
        let key = PrivateKey::generate_rsa(2048).unwrap();
        let PrivateKey::Rsa(private) = &key else {
            unreachable!()
        };
        let cek = [9u8; 32];
        let encrypted_key = private
            .to_public_key()
            .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), &cek)
            .unwrap();
        let protected = URL_SAFE_NO_PAD.encode(br#"{"enc":"A256GCM","alg":"RSA-OAEP-256"}"#);
        let iv = [1u8; 12];
        let sealed = Aes256Gcm::new_from_slice(&cek)
            .unwrap()
            .encrypt(
                &iv.into(),
                Payload {
                    msg: b"hi",
                    aad: protected.as_bytes(),
                },
            )
            .unwrap();
        let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
        let jwe = serde_json::json!({
            "protected": protected, "encrypted_key": URL_SAFE_NO_PAD.encode(encrypted_key),
            "iv": URL_SAFE_NO_PAD.encode(iv), "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
            "tag": URL_SAFE_NO_PAD.encode(tag),
        });
        let out = decrypt(&serde_json::to_vec(&jwe).unwrap(), &[key]).unwrap();
        assert_eq!(&out[..], b"hi");
    }
}
