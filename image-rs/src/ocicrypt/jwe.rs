//! JWE (RFC 7516) in the JSON serialization, as containers/ocicrypt writes it for
//! `org.opencontainers.image.enc.keys.jwe`: content encryption `A256GCM`, one recipient per key,
//! key management `RSA-OAEP`, `RSA-OAEP-256` or `ECDH-ES+A256KW` (RFC 7518).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::keys::{PrivateKey, PublicKey};

/// Errors from JWE decryption or encryption.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// The JWE is not valid JSON of the expected shape.
    #[error("malformed jwe")]
    Malformed(#[source] serde_json::Error),
    /// A base64url field does not decode.
    #[error("malformed base64url in jwe field {0}")]
    Base64(&'static str),
    /// The content encryption is not `A256GCM`, or a `zip` is asked for.
    #[error("unsupported jwe content encryption {0:?}")]
    UnsupportedEnc(String),
    /// No recipient could be unwrapped with any of the keys given.
    #[error("none of the {keys} private keys unwraps any of the {recipients} jwe recipients")]
    NoMatchingKey {
        /// Keys tried.
        keys: usize,
        /// Recipients in the JWE.
        recipients: usize,
    },
    /// The content did not authenticate under the unwrapped key.
    #[error("jwe content authentication failed")]
    Authentication,
    /// Wrapping the content key for a recipient failed.
    #[error("wrapping the content key for a recipient failed")]
    Wrap,
    /// The JWE has more recipients than accepted.
    #[error("jwe has {0} recipients, more than accepted")]
    TooManyRecipients(usize),
}

/// Most recipients considered in one JWE (each costs a private-key operation per key).
const MAX_RECIPIENTS: usize = 64;

#[derive(Debug, Deserialize, Serialize)]
struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted_key: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Jwe {
    protected: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unprotected: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recipients: Vec<Recipient>,
    // Flattened serialization: one recipient at top level.
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

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, JweError> {
    B64URL
        .decode(s.trim_end_matches('='))
        .map_err(|_| JweError::Base64(field))
}

/// Decrypts a JWE (general or flattened JSON serialization) with the first key that unwraps one
/// of its recipients; returns the plaintext.
pub(super) fn decrypt(jwe: &[u8], keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let jwe: Jwe = serde_json::from_slice(jwe).map_err(JweError::Malformed)?;
    let protected: Map<String, Value> =
        serde_json::from_slice(&b64("protected", &jwe.protected)?).map_err(JweError::Malformed)?;
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
    let joint = |r: &Recipient, name: &str| -> Option<Value> {
        protected
            .get(name)
            .or_else(|| jwe.unprotected.as_ref().and_then(|u| u.get(name)))
            .or_else(|| r.header.as_ref().and_then(|h| h.get(name)))
            .cloned()
    };
    let iv = b64("iv", &jwe.iv)?;
    let mut sealed = b64("ciphertext", &jwe.ciphertext)?;
    sealed.extend_from_slice(&b64("tag", &jwe.tag)?);
    let aad = match &jwe.aad {
        Some(a) => format!("{}.{}", jwe.protected, a),
        None => jwe.protected.clone(),
    };
    let iv: [u8; 12] = iv.try_into().map_err(|_| JweError::Base64("iv"))?;

    for r in &recipients {
        let enc = joint(r, "enc");
        if enc.as_ref().and_then(Value::as_str) != Some("A256GCM") {
            return Err(JweError::UnsupportedEnc(format!("{enc:?}")));
        }
        if joint(r, "zip").is_some() {
            return Err(JweError::UnsupportedEnc("zip".into()));
        }
        let Some(alg) = joint(r, "alg") else { continue };
        let Some(alg) = alg.as_str() else { continue };
        let ek = match &r.encrypted_key {
            Some(e) => b64("encrypted_key", e)?,
            None => continue,
        };
        for key in keys {
            let Some(cek) = unwrap_cek(alg, key, &ek, &|n| joint(r, n)) else {
                continue;
            };
            let cipher = Aes256Gcm::new_from_slice(&cek).map_err(|_| JweError::Authentication)?;
            let payload = Payload {
                msg: &sealed,
                aad: aad.as_bytes(),
            };
            return cipher
                .decrypt(&iv.into(), payload)
                .map(Zeroizing::new)
                .map_err(|_| JweError::Authentication);
        }
    }
    Err(JweError::NoMatchingKey {
        keys: keys.len(),
        recipients: recipients.len(),
    })
}

/// Unwraps the content key for one recipient with one key; `None` when this key does not fit.
fn unwrap_cek(
    alg: &str,
    key: &PrivateKey,
    ek: &[u8],
    header: &dyn Fn(&str) -> Option<Value>,
) -> Option<Zeroizing<Vec<u8>>> {
    let cek = match (alg, key) {
        ("RSA-OAEP", PrivateKey::Rsa(k)) => k.decrypt(rsa::Oaep::new::<sha1::Sha1>(), ek).ok()?,
        ("RSA-OAEP-256", PrivateKey::Rsa(k)) => k.decrypt(rsa::Oaep::new::<Sha256>(), ek).ok()?,
        ("ECDH-ES+A256KW", PrivateKey::P256(_) | PrivateKey::P384(_) | PrivateKey::P521(_)) => {
            let epk = header("epk")?;
            let z = ecdh_z(key, &epk)?;
            let apu = header("apu")
                .and_then(|v| v.as_str().and_then(|s| b64("apu", s).ok()))
                .unwrap_or_default();
            let apv = header("apv")
                .and_then(|v| v.as_str().and_then(|s| b64("apv", s).ok()))
                .unwrap_or_default();
            let kek = concat_kdf(&z, "ECDH-ES+A256KW", &apu, &apv, 256);
            let kw = aes_kw::KekAes256::new(&(*kek).into());
            kw.unwrap_vec(ek).ok()?
        }
        _ => return None,
    };
    (cek.len() == 32).then(|| Zeroizing::new(cek))
}

/// The ECDH shared secret with the sender's ephemeral key (a JWK on the same curve as `key`).
fn ecdh_z(key: &PrivateKey, epk: &Value) -> Option<Zeroizing<Vec<u8>>> {
    let field = |n: &str| epk.get(n).and_then(Value::as_str);
    if field("kty") != Some("EC") {
        return None;
    }
    let x = B64URL.decode(field("x")?).ok()?;
    let y = B64URL.decode(field("y")?).ok()?;
    let mut point = vec![0x04];
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    match (key, field("crv")?) {
        (PrivateKey::P256(sk), "P-256") if x.len() == 32 && y.len() == 32 => {
            let pk = p256::PublicKey::from_sec1_bytes(&point).ok()?;
            let s = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Some(Zeroizing::new(s.raw_secret_bytes().to_vec()))
        }
        (PrivateKey::P384(sk), "P-384") if x.len() == 48 && y.len() == 48 => {
            let pk = p384::PublicKey::from_sec1_bytes(&point).ok()?;
            let s = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Some(Zeroizing::new(s.raw_secret_bytes().to_vec()))
        }
        (PrivateKey::P521(sk), "P-521") if x.len() == 66 && y.len() == 66 => {
            let pk = p521::PublicKey::from_sec1_bytes(&point).ok()?;
            let s = p521::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Some(Zeroizing::new(s.raw_secret_bytes().to_vec()))
        }
        _ => None,
    }
}

/// Concat KDF (NIST SP 800-56A) with SHA-256 for a 256-bit key, as RFC 7518 section 4.6.2 uses
/// it: one round is enough for keys up to 256 bits.
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], bits: u32) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [alg.as_bytes(), apu, apv] {
        h.update(u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(part);
    }
    h.update(bits.to_be_bytes());
    Zeroizing::new(h.finalize().into())
}

/// Encrypts `plaintext` for every recipient (general JSON serialization, `A256GCM`).
pub(super) fn encrypt(plaintext: &[u8], recipients: &[PublicKey]) -> Result<Vec<u8>, JweError> {
    let mut rng = rand::rngs::OsRng;
    let mut cek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut cek[..]);
    let mut iv = [0u8; 12];
    rng.fill_bytes(&mut iv);
    let protected = B64URL.encode(br#"{"enc":"A256GCM"}"#);

    let mut out = Vec::with_capacity(recipients.len());
    for pk in recipients {
        let mut header = Map::new();
        let ek = match pk {
            PublicKey::Rsa(k) => {
                header.insert("alg".into(), "RSA-OAEP".into());
                k.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), &cek[..])
                    .map_err(|_| JweError::Wrap)?
            }
            PublicKey::P256(k) => {
                let eph = p256::SecretKey::random(&mut rng);
                let z = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), k.as_affine());
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &eph.public_key(),
                    false,
                );
                ecdh_wrap(
                    &mut header,
                    "P-256",
                    point.x(),
                    point.y(),
                    z.raw_secret_bytes(),
                    &cek,
                )?
            }
            PublicKey::P384(k) => {
                let eph = p384::SecretKey::random(&mut rng);
                let z = p384::ecdh::diffie_hellman(eph.to_nonzero_scalar(), k.as_affine());
                let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &eph.public_key(),
                    false,
                );
                ecdh_wrap(
                    &mut header,
                    "P-384",
                    point.x(),
                    point.y(),
                    z.raw_secret_bytes(),
                    &cek,
                )?
            }
            PublicKey::P521(k) => {
                let eph = p521::SecretKey::random(&mut rng);
                let z = p521::ecdh::diffie_hellman(eph.to_nonzero_scalar(), k.as_affine());
                let point = p521::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &eph.public_key(),
                    false,
                );
                ecdh_wrap(
                    &mut header,
                    "P-521",
                    point.x(),
                    point.y(),
                    z.raw_secret_bytes(),
                    &cek,
                )?
            }
        };
        out.push(Recipient {
            header: Some(header),
            encrypted_key: Some(B64URL.encode(ek)),
        });
    }

    let cipher = Aes256Gcm::new_from_slice(&cek[..]).map_err(|_| JweError::Wrap)?;
    let sealed = cipher
        .encrypt(
            &iv.into(),
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .map_err(|_| JweError::Wrap)?;
    let (ct, tag) = sealed.split_at(sealed.len().saturating_sub(16));
    let jwe = Jwe {
        protected,
        unprotected: None,
        recipients: out,
        header: None,
        encrypted_key: None,
        aad: None,
        iv: B64URL.encode(iv),
        ciphertext: B64URL.encode(ct),
        tag: B64URL.encode(tag),
    };
    serde_json::to_vec(&jwe).map_err(JweError::Malformed)
}

fn ecdh_wrap(
    header: &mut Map<String, Value>,
    crv: &str,
    x: Option<&impl AsRef<[u8]>>,
    y: Option<&impl AsRef<[u8]>>,
    z: &[u8],
    cek: &[u8; 32],
) -> Result<Vec<u8>, JweError> {
    let (Some(x), Some(y)) = (x, y) else {
        return Err(JweError::Wrap);
    };
    header.insert("alg".into(), "ECDH-ES+A256KW".into());
    let epk = serde_json::json!({
        "kty": "EC", "crv": crv, "x": B64URL.encode(x), "y": B64URL.encode(y),
    });
    header.insert("epk".into(), epk);
    let kek = concat_kdf(z, "ECDH-ES+A256KW", b"", b"", 256);
    let kw = aes_kw::KekAes256::new(&(*kek).into());
    kw.wrap_vec(cek).map_err(|_| JweError::Wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_key() -> PrivateKey {
        PrivateKey::Rsa(Box::new(
            rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap(),
        ))
    }

    #[test]
    fn round_trips_for_each_recipient_kind() {
        let keys = [
            rsa_key(),
            PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng)),
            PrivateKey::P384(p384::SecretKey::random(&mut rand::rngs::OsRng)),
            PrivateKey::P521(p521::SecretKey::random(&mut rand::rngs::OsRng)),
        ];
        let pubs: Vec<_> = keys.iter().map(PrivateKey::public_key).collect();
        let jwe = encrypt(b"layer options", &pubs).unwrap();
        for k in &keys {
            assert_eq!(
                &decrypt(&jwe, std::slice::from_ref(k)).unwrap()[..],
                b"layer options"
            );
        }
        let other = PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng));
        assert!(matches!(
            decrypt(&jwe, &[other]),
            Err(JweError::NoMatchingKey {
                keys: 1,
                recipients: 4
            })
        ));
    }

    #[test]
    fn p521_ephemeral_keys_of_the_wrong_shape_are_refused() {
        let k = PrivateKey::P521(p521::SecretKey::random(&mut rand::rngs::OsRng));
        let jwe = encrypt(b"opts", &[k.public_key()]).unwrap();
        let v: Value = serde_json::from_slice(&jwe).unwrap();
        let epk = &v["recipients"][0]["header"]["epk"];
        assert_eq!(epk["crv"], "P-521");
        assert_eq!(B64URL.decode(epk["x"].as_str().unwrap()).unwrap().len(), 66);
        let x = B64URL.decode(epk["x"].as_str().unwrap()).unwrap();
        for (field, value) in [
            ("x", B64URL.encode(&x[1..])),
            ("x", B64URL.encode([0xffu8; 66])),
            ("crv", "P-384".to_owned()),
        ] {
            let mut bad = v.clone();
            bad["recipients"][0]["header"]["epk"][field] = value.into();
            let bad = serde_json::to_vec(&bad).unwrap();
            assert!(
                matches!(
                    decrypt(&bad, std::slice::from_ref(&k)),
                    Err(JweError::NoMatchingKey { .. })
                ),
                "{field}"
            );
        }
    }

    #[test]
    fn tampering_is_detected() {
        let k = PrivateKey::P256(p256::SecretKey::random(&mut rand::rngs::OsRng));
        let jwe = encrypt(b"secret", &[k.public_key()]).unwrap();
        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        let ct = B64URL.decode(v["ciphertext"].as_str().unwrap()).unwrap();
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        v["ciphertext"] = B64URL.encode(&flipped).into();
        let bad = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            decrypt(&bad, std::slice::from_ref(&k)),
            Err(JweError::Authentication)
        ));

        // A changed protected header changes the AAD.
        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        v["protected"] = B64URL.encode(br#"{"enc":"A256GCM" }"#).into();
        let bad = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            decrypt(&bad, std::slice::from_ref(&k)),
            Err(JweError::Authentication)
        ));

        let mut v: Value = serde_json::from_slice(&jwe).unwrap();
        v["protected"] = B64URL.encode(br#"{"enc":"A128CBC-HS256"}"#).into();
        let bad = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            decrypt(&bad, std::slice::from_ref(&k)),
            Err(JweError::UnsupportedEnc(_))
        ));

        assert!(matches!(
            decrypt(b"{not json", &[k]),
            Err(JweError::Malformed(_))
        ));
    }

    #[test]
    fn rsa_oaep_256_recipients_decrypt() {
        let k = rsa_key();
        let PrivateKey::Rsa(sk) = &k else {
            unreachable!()
        };
        let cek = [9u8; 32];
        let ek = sk
            .to_public_key()
            .encrypt(&mut rand::rngs::OsRng, rsa::Oaep::new::<Sha256>(), &cek)
            .unwrap();
        let protected = B64URL.encode(br#"{"enc":"A256GCM","alg":"RSA-OAEP-256"}"#);
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
        let (ct, tag) = sealed.split_at(sealed.len() - 16);
        let jwe = serde_json::json!({
            "protected": protected, "encrypted_key": B64URL.encode(ek),
            "iv": B64URL.encode(iv), "ciphertext": B64URL.encode(ct), "tag": B64URL.encode(tag),
        });
        let out = decrypt(&serde_json::to_vec(&jwe).unwrap(), &[k]).unwrap();
        assert_eq!(&out[..], b"hi");
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 appendix C: ECDH-ES direct, A128GCM, apu "Alice", apv "Bob".
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(
            &k[..16],
            &[
                86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26
            ]
        );
    }
}
