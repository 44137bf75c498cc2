//! The key-provider scheme of Confidential Containers: the layer's private options are wrapped
//! with AES-256-GCM under a key-encryption key (KEK) that the key broker releases after
//! attestation. The annotation `org.opencontainers.image.enc.keys.provider.attestation-agent`
//! holds (base64 of) a JSON packet with the KEK's `kbs:///` id, the wrapped options, the GCM IV
//! and the wrap type `A256GCM`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The only wrap type defined by the scheme.
pub(crate) const WRAP_TYPE_A256GCM: &str = "A256GCM";

/// Longest key id accepted.
const MAX_KID_LEN: usize = 1024;

/// A key id in the key broker: `kbs:///<repository>/<type>/<tag>` (the host part may be given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a `kbs://` key id.
    pub fn parse(s: &str) -> Result<Self, ProviderError> {
        let rest = s
            .strip_prefix("kbs://")
            .ok_or_else(|| ProviderError::KeyId(short(s)))?;
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or_default();
        let parts: Vec<&str> = path.split('/').collect();
        let ok = s.len() <= MAX_KID_LEN
            && parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && *p != "." && *p != "..");
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ProviderError::KeyId(short(s)))
        }
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An error from a [`KeyProvider`], with its cause kept.
#[derive(Debug, thiserror::Error)]
#[error("key provider could not supply key {key_id}")]
pub struct KeyProviderError {
    /// The key asked for.
    pub key_id: KeyId,
    /// Why not.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The future a [`KeyProvider`] returns.
pub type KeyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Zeroizing<Vec<u8>>, KeyProviderError>> + Send + 'a>>;

/// Supplies key-encryption keys by id. The attestation agent implements it by attesting to the
/// key broker and fetching the resource; tests and the host CLI use [`StaticKeyProvider`].
pub trait KeyProvider: Send + Sync {
    /// The key stored under `key_id`.
    fn get_key<'a>(&'a self, key_id: &'a KeyId) -> KeyFuture<'a>;
}

/// Keys held in memory (for tests and the host-side CLI, where the owner has the keys).
#[derive(Default)]
pub struct StaticKeyProvider {
    keys: BTreeMap<KeyId, Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for StaticKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no such key")]
struct NoSuchKey;

impl StaticKeyProvider {
    /// Adds a key.
    pub fn insert(&mut self, key_id: KeyId, key: Vec<u8>) {
        self.keys.insert(key_id, Zeroizing::new(key));
    }
}

impl KeyProvider for StaticKeyProvider {
    fn get_key<'a>(&'a self, key_id: &'a KeyId) -> KeyFuture<'a> {
        let found = self.keys.get(key_id).cloned();
        Box::pin(async move {
            found.ok_or_else(|| KeyProviderError {
                key_id: key_id.clone(),
                source: Box::new(NoSuchKey),
            })
        })
    }
}

/// Errors from the key-provider scheme.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The packet is not the expected JSON.
    #[error("malformed key-provider annotation packet")]
    Malformed(#[source] serde_json::Error),
    /// A base64 field does not decode.
    #[error("malformed base64 in key-provider packet field {0}")]
    Base64(&'static str),
    /// The key id is not a `kbs:///repository/type/tag` id.
    #[error("invalid key id {0:?}")]
    KeyId(String),
    /// The wrap type is not `A256GCM`.
    #[error("unsupported wrap type {0:?}")]
    WrapType(String),
    /// The KEK or IV has the wrong length.
    #[error("invalid {0} length for A256GCM")]
    BadLength(&'static str),
    /// The wrapped options did not authenticate under the KEK.
    #[error("key-provider unwrap failed: wrong key-encryption key or tampered packet")]
    Authentication,
    /// The provider could not supply the KEK.
    #[error(transparent)]
    Provider(#[from] KeyProviderError),
}

#[derive(Debug, Serialize, Deserialize)]
struct AnnotationPacket {
    kid: String,
    wrapped_data: String,
    iv: String,
    wrap_type: String,
}

/// Unwraps a packet (the JSON, already base64-decoded from the annotation) with a key from
/// `provider`; returns the layer's private options JSON.
pub(super) async fn unwrap(
    packet: &[u8],
    provider: &dyn KeyProvider,
) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
    let packet: AnnotationPacket =
        serde_json::from_slice(packet).map_err(ProviderError::Malformed)?;
    if packet.wrap_type != WRAP_TYPE_A256GCM {
        return Err(ProviderError::WrapType(short(&packet.wrap_type)));
    }
    let kid = KeyId::parse(&packet.kid)?;
    let iv = B64
        .decode(&packet.iv)
        .map_err(|_| ProviderError::Base64("iv"))?;
    let wrapped = B64
        .decode(&packet.wrapped_data)
        .map_err(|_| ProviderError::Base64("wrapped_data"))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| ProviderError::BadLength("iv"))?;
    let kek = provider.get_key(&kid).await?;
    let cipher = Aes256Gcm::new_from_slice(&kek)
        .map_err(|_| ProviderError::BadLength("key-encryption key"))?;
    cipher
        .decrypt(&iv.into(), wrapped.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| ProviderError::Authentication)
}

/// Wraps `opts` (private options JSON) under `kek`; returns the packet JSON.
pub(super) fn wrap(kid: &KeyId, kek: &[u8], opts: &[u8]) -> Result<Vec<u8>, ProviderError> {
    let cipher = Aes256Gcm::new_from_slice(kek)
        .map_err(|_| ProviderError::BadLength("key-encryption key"))?;
    let mut iv = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let wrapped = cipher
        .encrypt(&iv.into(), opts)
        .map_err(|_| ProviderError::Authentication)?;
    let packet = AnnotationPacket {
        kid: kid.as_str().to_owned(),
        wrapped_data: B64.encode(wrapped),
        iv: B64.encode(iv),
        wrap_type: WRAP_TYPE_A256GCM.to_owned(),
    };
    serde_json::to_vec(&packet).map_err(ProviderError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn key_ids_are_validated() {
        assert!(KeyId::parse("kbs:///default/key/1").is_ok());
        assert!(KeyId::parse("kbs://broker.example:8080/default/key/1").is_ok());
        for bad in [
            "kbs:///default/key",
            "http:///a/b/c",
            "kbs:///a/../c",
            "kbs:///a//c",
            "kbs:///a/b/c/d",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wrap_unwrap_round_trip_and_failures() {
        let kid = KeyId::parse("kbs:///default/image-kek/1").unwrap();
        let kek = vec![7u8; 32];
        let mut p = StaticKeyProvider::default();
        p.insert(kid.clone(), kek.clone());
        let packet = wrap(&kid, &kek, b"{\"symkey\":\"...\"}").unwrap();
        assert_eq!(
            &block_on(unwrap(&packet, &p)).unwrap()[..],
            b"{\"symkey\":\"...\"}"
        );

        // Wrong KEK under the same id.
        let mut wrong = StaticKeyProvider::default();
        wrong.insert(kid.clone(), vec![8u8; 32]);
        assert!(matches!(
            block_on(unwrap(&packet, &wrong)),
            Err(ProviderError::Authentication)
        ));
        // Unknown id.
        let empty = StaticKeyProvider::default();
        assert!(matches!(
            block_on(unwrap(&packet, &empty)),
            Err(ProviderError::Provider(_))
        ));
        // Tampered wrapped data.
        let mut v: serde_json::Value = serde_json::from_slice(&packet).unwrap();
        let mut w = B64.decode(v["wrapped_data"].as_str().unwrap()).unwrap();
        w[0] ^= 1;
        v["wrapped_data"] = B64.encode(w).into();
        let bad = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            block_on(unwrap(&bad, &p)),
            Err(ProviderError::Authentication)
        ));
        // Other wrap type.
        let mut v: serde_json::Value = serde_json::from_slice(&packet).unwrap();
        v["wrap_type"] = "A128CBC".into();
        let bad = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            block_on(unwrap(&bad, &p)),
            Err(ProviderError::WrapType(_))
        ));
    }

    #[test]
    fn reads_the_coco_packet_field_names() {
        let json = br#"{"kid":"kbs:///default/key/1","wrapped_data":"AAAA","iv":"AAAAAAAAAAAAAAAA","wrap_type":"A256GCM"}"#;
        let p = StaticKeyProvider::default();
        // Parses, then fails only because the key is unknown.
        assert!(matches!(
            block_on(unwrap(json, &p)),
            Err(ProviderError::Provider(_))
        ));
    }
}
