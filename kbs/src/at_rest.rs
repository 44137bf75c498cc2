//! At-rest encryption of what the broker stores in a shared database: every resource and the
//! token signing key are sealed with AES-256-GCM under a key the operator provides (a file or
//! an environment variable, never the database), so that a dump or a backup of the database
//! holds no plaintext secret.
//!
//! A sealed value is `TKS1 || key id (8) || nonce (12) || ciphertext and tag`. The additional
//! data names what the value is (`resource/<path>`, `setting/<name>`), so a sealed value moved to
//! another row does not open. Older keys can be kept for reading while the values are re-sealed
//! under a new one (`tsuba kbs reseal`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::challenge::ChallengeKeys;
use crate::store::StoreError;

const MAGIC: &[u8; 4] = b"TKS1";
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// Why an at-rest key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtRestKeyError {
    /// The key is not 64 hexadecimal characters (32 bytes).
    #[error(
        "at-rest key must be 64 hexadecimal characters (32 bytes), e.g. from `openssl rand -hex 32`"
    )]
    Format,
    /// Two of the keys given are the same key.
    #[error("the same at-rest key is given twice")]
    Duplicate,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
    /// Derived from the same bytes, to tag challenge cookies (`crate::challenge`).
    challenge: ring::hmac::Key,
}

/// The operator's at-rest keys: the current one seals, every one of them opens.
pub struct AtRestKeys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for AtRestKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtRestKeys")
            .field("current", &hex::encode(self.current.id))
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| hex::encode(k.id))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn parse_key(text: &str) -> Result<Key, AtRestKeyError> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(AtRestKeyError::Format);
    }
    let bytes = Zeroizing::new(hex::decode(text).map_err(|_| AtRestKeyError::Format)?);
    let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| AtRestKeyError::Format)?;
    let digest = Sha256::new()
        .chain_update(b"tsuba-kbs at-rest key id\0")
        .chain_update(bytes.as_slice())
        .finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    let challenge = crate::challenge::derive_key(&bytes);
    Ok(Key {
        id,
        cipher,
        challenge,
    })
}

impl AtRestKeys {
    /// `current` seals and opens; each of `previous` only opens (hex text, 32 bytes each).
    pub fn from_hex(current: &str, previous: &[&str]) -> Result<Self, AtRestKeyError> {
        let current = parse_key(current)?;
        let mut ids = vec![current.id];
        let mut old = Vec::new();
        for text in previous {
            let key = parse_key(text)?;
            if ids.contains(&key.id) {
                return Err(AtRestKeyError::Duplicate);
            }
            ids.push(key.id);
            old.push(key);
        }
        Ok(Self {
            current,
            previous: old,
        })
    }

    /// The id of the current key (hex), for logs and `reseal`'s report; not secret.
    pub fn current_id(&self) -> String {
        hex::encode(self.current.id)
    }

    /// The keys that tag and check challenge cookies, following these keys: the current one
    /// tags, every one checks, so a rotation does not break the handshakes in flight.
    pub(crate) fn challenge_keys(&self) -> ChallengeKeys {
        ChallengeKeys::new(
            self.current.challenge.clone(),
            self.previous
                .iter()
                .map(|key| key.challenge.clone())
                .collect(),
        )
    }

    /// Seals `plaintext` as the value named `what`.
    pub(crate) fn seal(&self, what: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = aad(what);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Sealed { what: what.into() })?;
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens the value named `what`; refuses one sealed under an unknown key, for another name,
    /// or altered.
    pub(crate) fn open(&self, what: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let refused = || StoreError::Sealed { what: what.into() };
        if sealed.len() < HEADER_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(StoreError::Malformed { what: what.into() });
        }
        let id = &sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or_else(refused)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let aad = aad(what);
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused())
    }

    /// Whether `sealed` is sealed under the current key.
    pub(crate) fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(MAGIC.len()..MAGIC.len() + KEY_ID_LEN) == Some(&self.current.id[..])
    }
}

fn aad(what: &str) -> Vec<u8> {
    let mut aad = b"tsuba-kbs at-rest v1\0".to_vec();
    aad.extend_from_slice(what.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn sealed_values_open_only_under_their_key_and_name() {
        let keys = AtRestKeys::from_hex(A, &[]).unwrap();
        let sealed = keys.seal("resource/a/b/c", b"top-secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"top-secret"));
        assert_eq!(
            keys.open("resource/a/b/c", &sealed).unwrap().as_slice(),
            b"top-secret"
        );
        // Moved to another name.
        assert!(matches!(
            keys.open("resource/a/b/d", &sealed),
            Err(StoreError::Sealed { what }) if what == "resource/a/b/d"
        ));
        // Altered.
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(
            keys.open("resource/a/b/c", &tampered),
            Err(StoreError::Sealed { .. })
        ));
        // Truncated or not sealed at all.
        assert!(matches!(
            keys.open("resource/a/b/c", &sealed[..10]),
            Err(StoreError::Malformed { .. })
        ));
        // Another key.
        let other = AtRestKeys::from_hex(B, &[]).unwrap();
        assert!(matches!(
            other.open("resource/a/b/c", &sealed),
            Err(StoreError::Sealed { .. })
        ));
    }

    #[test]
    fn a_previous_key_opens_but_does_not_seal() {
        let old = AtRestKeys::from_hex(A, &[]).unwrap();
        let sealed = old.seal("setting/token-key", b"pem").unwrap();
        let rotated = AtRestKeys::from_hex(B, &[A]).unwrap();
        assert!(!rotated.is_current(&sealed));
        assert_eq!(
            rotated
                .open("setting/token-key", &sealed)
                .unwrap()
                .as_slice(),
            b"pem"
        );
        let resealed = rotated.seal("setting/token-key", b"pem").unwrap();
        assert!(rotated.is_current(&resealed));
        assert!(matches!(
            old.open("setting/token-key", &resealed),
            Err(StoreError::Sealed { .. })
        ));
    }

    #[test]
    fn keys_are_64_hex_characters() {
        for bad in ["", "00", &A[..63], &format!("{A}00"), &A.replace('0', "g")] {
            assert_eq!(
                AtRestKeys::from_hex(bad, &[]).unwrap_err(),
                AtRestKeyError::Format,
                "{bad}"
            );
        }
        assert!(AtRestKeys::from_hex(&format!(" {A}\n"), &[]).is_ok());
        assert_eq!(
            AtRestKeys::from_hex(A, &[B, A]).unwrap_err(),
            AtRestKeyError::Duplicate
        );
    }
}
