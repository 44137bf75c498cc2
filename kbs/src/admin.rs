//! Admin authentication: every admin call carries `Authorization: Bearer <JWT>` signed with the
//! administrator's key, as Trustee's broker expects: Ed25519 (`EdDSA`, what `tsuba kbs
//! admin-keygen` and Trustee's set-up make), P-256 (`ES256`) or RSA (`RS256`), the algorithm
//! matching the key. The token must carry an `exp` in the future; there is no unauthenticated
//! admin access.
//!
//! By default each accepted token is remembered until its `exp` (by its `jti` when it has one,
//! else by its SHA-256) and refused if presented again, so a captured token cannot be replayed
//! within its lifetime. An operator whose tooling reuses one token (Trustee's `kbs-client
//! config --admin-token-file`) chooses [`TokenUse::UntilExpiry`], Trustee's behaviour; a broker
//! with no admin key ([`AdminAuth::disabled`], Trustee's `DenyAll`) refuses every admin call. The memory is bounded: expired entries are dropped as time passes, and when
//! `MAX_REMEMBERED_TOKENS` unexpired tokens are remembered, new ones are refused until some
//! expire (only tokens with a valid signature are ever remembered).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

/// Largest admin token accepted.
const MAX_ADMIN_TOKEN_LEN: usize = 8 * 1024;

/// Allowed clock skew for `iat`/`nbf` (seconds).
const SKEW: u64 = 60;

/// Most admin tokens remembered at once for replay protection.
pub(crate) const MAX_REMEMBERED_TOKENS: usize = 16 * 1024;

/// Why an admin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token is not a well-formed EdDSA JWT.
    #[error("admin token is malformed")]
    Malformed,
    /// The signature does not verify under the admin key.
    #[error("admin token signature is invalid")]
    Signature,
    /// The token has expired, has no `exp`, or is not valid yet.
    #[error("admin token is expired or not yet valid")]
    Expired,
    /// The token was already used.
    #[error("admin token was already used")]
    Replayed,
    /// Too many unexpired tokens are remembered to accept another one now.
    #[error("too many admin tokens in use")]
    TooManyTokens,
    /// This broker has no admin key: its admin API is off.
    #[error("the admin api is disabled on this broker (started with --admin-disabled)")]
    Disabled,
    /// The token's algorithm is not the one of the administrator's key.
    #[error("admin token algorithm {alg:?} does not fit the admin key, which takes {expected}")]
    Algorithm {
        /// What the token's header names (at most 20 characters).
        alg: String,
        /// What the key takes.
        expected: &'static str,
    },
    /// The configured admin key could not be read.
    #[error(
        "admin public key is not an Ed25519, P-256 or RSA (2048 to 4096 bits) public key in SPKI \
         PEM (-----BEGIN PUBLIC KEY-----)"
    )]
    Key,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// Accepted tokens that have not expired yet, by identity.
#[derive(Debug, Default)]
struct SeenTokens {
    /// Identity → expiry (Unix seconds).
    expiry: std::collections::HashMap<[u8; 32], u64>,
    /// The same entries ordered by expiry, earliest first, for pruning.
    by_expiry: std::collections::BinaryHeap<std::cmp::Reverse<(u64, [u8; 32])>>,
}

impl SeenTokens {
    /// Remembers `id` until `exp`, refusing it if it is already remembered.
    fn remember(&mut self, id: [u8; 32], exp: u64, now: u64) -> Result<(), AdminAuthError> {
        while let Some(std::cmp::Reverse((when, old))) = self.by_expiry.peek().copied() {
            if when > now {
                break;
            }
            self.by_expiry.pop();
            self.expiry.remove(&old);
        }
        if self.expiry.contains_key(&id) {
            return Err(AdminAuthError::Replayed);
        }
        if self.expiry.len() >= MAX_REMEMBERED_TOKENS {
            return Err(AdminAuthError::TooManyTokens);
        }
        self.expiry.insert(id, exp);
        self.by_expiry.push(std::cmp::Reverse((exp, id)));
        Ok(())
    }
}

/// How often one admin token may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenUse {
    /// Once: a token seen again before it expires is refused (tsuba's default).
    #[default]
    Once,
    /// Any number of times until it expires (Trustee's behaviour).
    UntilExpiry,
}

/// The administrator's public key, of one of the kinds Trustee's identity providers take.
#[derive(Debug, Clone)]
enum AdminKey {
    /// `EdDSA`.
    Ed25519(VerifyingKey),
    /// `ES256`.
    P256(p256::ecdsa::VerifyingKey),
    /// `RS256`.
    Rsa(Box<rsa::pkcs1v15::VerifyingKey<sha2::Sha256>>),
}

/// RSA admin key sizes taken (bits).
const RSA_ADMIN_KEY_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

impl AdminKey {
    fn from_spki_pem(pem: &str) -> Option<Self> {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::traits::PublicKeyParts as _;

        if let Ok(key) = VerifyingKey::from_public_key_pem(pem) {
            return Some(Self::Ed25519(key));
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Some(Self::P256(key));
        }
        let key = rsa::RsaPublicKey::from_public_key_pem(pem).ok()?;
        RSA_ADMIN_KEY_BITS
            .contains(&key.n().bits())
            .then(|| Self::Rsa(Box::new(rsa::pkcs1v15::VerifyingKey::new(key))))
    }

    /// The JWS algorithm this key verifies.
    fn alg(&self) -> &'static str {
        match self {
            Self::Ed25519(_) => "EdDSA",
            Self::P256(_) => "ES256",
            Self::Rsa(_) => "RS256",
        }
    }

    /// Checks `signature` over `input`.
    fn verify(&self, input: &[u8], signature: &[u8]) -> Result<(), AdminAuthError> {
        use p256::ecdsa::signature::Verifier as _;

        let ok = match self {
            Self::Ed25519(key) => Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(input, &signature).is_ok()),
            // JWS ES256: r || s, 32 bytes each.
            Self::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(input, &signature).is_ok()),
            Self::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(input, &signature).is_ok()),
        };
        if ok {
            Ok(())
        } else {
            Err(AdminAuthError::Signature)
        }
    }
}

/// Checks admin tokens against the administrator's public key.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    /// `None`: the admin API is off.
    key: Option<AdminKey>,
    token_use: TokenUse,
    seen: std::sync::Arc<std::sync::Mutex<SeenTokens>>,
}

impl AdminAuth {
    /// Uses `key` as the administrator's key; each token is accepted once.
    pub fn new(key: VerifyingKey) -> Self {
        Self::with_key(AdminKey::Ed25519(key))
    }

    /// Uses `key`; each token is accepted once.
    fn with_key(key: AdminKey) -> Self {
        Self {
            key: Some(key),
            token_use: TokenUse::Once,
            seen: std::sync::Arc::default(),
        }
    }

    /// No administrator: every admin call is refused.
    pub fn disabled() -> Self {
        Self {
            key: None,
            token_use: TokenUse::Once,
            seen: std::sync::Arc::default(),
        }
    }

    /// The same key, accepting each token as often as `token_use` says.
    pub fn with_token_use(self, token_use: TokenUse) -> Self {
        Self { token_use, ..self }
    }

    /// How often one token may be used.
    pub fn token_use(&self) -> TokenUse {
        self.token_use
    }

    /// Reads the administrator's key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`): Ed25519,
    /// P-256 or RSA.
    pub fn from_public_key_pem(pem: &str) -> Result<Self, AdminAuthError> {
        AdminKey::from_spki_pem(pem)
            .map(Self::with_key)
            .ok_or(AdminAuthError::Key)
    }

    /// Checks the value of an `Authorization` header at `now` (Unix seconds), and remembers
    /// the token so that it is refused if it comes again before it expires.
    pub fn check(&self, authorization: Option<&str>, now: u64) -> Result<(), AdminAuthError> {
        let (id, exp) = self.verify(authorization, now)?;
        match self.token_use {
            TokenUse::Once => self.remember(id, exp, now),
            TokenUse::UntilExpiry => Ok(()),
        }
    }

    /// Remembers an accepted token's identity in this process until `exp`.
    pub(crate) fn remember(&self, id: [u8; 32], exp: u64, now: u64) -> Result<(), AdminAuthError> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remember(id, exp, now)
    }

    /// Checks the token's signature and times without remembering it; returns its identity
    /// and expiry, for a replay set shared by replicas.
    pub(crate) fn verify(
        &self,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<([u8; 32], u64), AdminAuthError> {
        let key = self.key.as_ref().ok_or(AdminAuthError::Disabled)?;
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(AdminAuthError::Missing)?
            .trim();
        if token.len() > MAX_ADMIN_TOKEN_LEN {
            return Err(AdminAuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AdminAuthError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != key.alg() {
            return Err(AdminAuthError::Algorithm {
                alg: header.alg.chars().take(20).collect(),
                expected: key.alg(),
            });
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AdminAuthError::Malformed)?;
        let signed_len = token.len() - signature_suffix_len(token);
        key.verify(&token.as_bytes()[..signed_len], &signature)?;
        let claims: Claims = decode_json(payload)?;
        let not_before = claims.nbf.or(claims.iat).unwrap_or(0);
        let exp = match claims.exp {
            Some(exp) if exp > now && not_before <= now.saturating_add(SKEW) => exp,
            _ => return Err(AdminAuthError::Expired),
        };
        Ok((token_identity(claims.jti.as_deref(), token), exp))
    }
}

/// What makes a token the same token: its `jti` when it has one, else its exact text.
fn token_identity(jti: Option<&str>, token: &str) -> [u8; 32] {
    use sha2::Digest;

    let mut hash = sha2::Sha256::new();
    match jti {
        Some(jti) => {
            hash.update(b"jti\0");
            hash.update(jti.as_bytes());
        }
        None => {
            hash.update(b"token\0");
            hash.update(token.as_bytes());
        }
    }
    hash.finalize().into()
}

fn signature_suffix_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AdminAuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AdminAuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AdminAuthError::Malformed)
}

/// Makes an admin token (for the CLI and tests). Each call makes a new token, with a random
/// `jti`, usable once.
pub fn sign_admin_token(key: &ed25519_dalek::SigningKey, iat: u64, exp: u64) -> String {
    use ed25519_dalek::Signer;
    use rand::RngCore;

    let mut jti = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut jti);
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": "tsuba", "sub": "admin", "aud": ["KBS"], "role": "admin", "iat": iat, "exp": exp,
        "jti": hex::encode(jti),
    });
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePublicKey;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn valid_token_passes() {
        let auth = AdminAuth::new(key(1).verifying_key());
        let token = sign_admin_token(&key(1), 100, 200);
        auth.check(Some(&format!("Bearer {token}")), 150).unwrap();
    }

    #[test]
    fn a_token_is_accepted_once() {
        let auth = AdminAuth::new(key(1).verifying_key());
        let token = format!("Bearer {}", sign_admin_token(&key(1), 100, 160));
        auth.check(Some(&token), 110).unwrap();
        assert!(matches!(
            auth.check(Some(&token), 111),
            Err(AdminAuthError::Replayed)
        ));
        // A clone is the same broker: it shares what was seen.
        assert!(matches!(
            auth.clone().check(Some(&token), 159),
            Err(AdminAuthError::Replayed)
        ));
        // Once expired it is refused as expired (and forgotten).
        assert!(matches!(
            auth.check(Some(&token), 160),
            Err(AdminAuthError::Expired)
        ));
        // Fresh tokens with the same times are different tokens.
        let fresh = format!("Bearer {}", sign_admin_token(&key(1), 100, 160));
        assert_ne!(fresh, token);
        auth.check(Some(&fresh), 112).unwrap();
    }

    fn signed(claims: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = ed25519_dalek::Signer::sign(&key(1), input.as_bytes());
        format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    #[test]
    fn replay_identity_is_the_jti_else_the_token() {
        let auth = AdminAuth::new(key(1).verifying_key());
        // Two different tokens with one jti: the second is a replay.
        auth.check(Some(&signed(r#"{"exp":200,"jti":"a"}"#)), 150)
            .unwrap();
        assert!(matches!(
            auth.check(Some(&signed(r#"{"exp":300,"jti":"a"}"#)), 150),
            Err(AdminAuthError::Replayed)
        ));
        // Without a jti, the token text itself.
        let plain = signed(r#"{"exp":200}"#);
        auth.check(Some(&plain), 150).unwrap();
        assert!(matches!(
            auth.check(Some(&plain), 150),
            Err(AdminAuthError::Replayed)
        ));
        auth.check(Some(&signed(r#"{"exp":201}"#)), 150).unwrap();
        // A refused token (bad signature) is not remembered and does not block the real one.
        let real = signed(r#"{"exp":200,"jti":"b"}"#);
        let (head, _) = real.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert!(auth.check(Some(&forged), 150).is_err());
        auth.check(Some(&real), 150).unwrap();
    }

    #[test]
    fn remembered_tokens_are_bounded_and_pruned() {
        let mut seen = SeenTokens::default();
        let id = |n: usize| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&n.to_le_bytes());
            id
        };
        for n in 0..MAX_REMEMBERED_TOKENS {
            seen.remember(id(n), 100, 50).unwrap();
        }
        assert!(matches!(
            seen.remember(id(MAX_REMEMBERED_TOKENS), 100, 50),
            Err(AdminAuthError::TooManyTokens)
        ));
        // Once those expire they are dropped and new tokens fit again.
        seen.remember(id(MAX_REMEMBERED_TOKENS), 200, 100).unwrap();
        assert_eq!(seen.expiry.len(), 1);
        assert_eq!(seen.by_expiry.len(), 1);
        // An old token that expired is no longer remembered (the expiry check refuses it).
        seen.remember(id(0), 300, 150).unwrap();
    }

    #[test]
    fn pem_key_loads() {
        let pem = key(1)
            .verifying_key()
            .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let auth = AdminAuth::from_public_key_pem(&pem).unwrap();
        let token = sign_admin_token(&key(1), 100, 200);
        auth.check(Some(&format!("Bearer {token}")), 150).unwrap();
        assert!(AdminAuth::from_public_key_pem("garbage").is_err());
    }

    /// A token signed with `alg` over `claims` by `sign`.
    fn jws(alg: &str, claims: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = sign(input.as_bytes());
        format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Trustee's identity providers take EC and RSA keys too; so does this broker, each with
    /// its own algorithm only.
    #[test]
    fn p256_and_rsa_admin_keys_verify_es256_and_rs256_tokens() {
        use p256::ecdsa::signature::Signer as _;
        use rsa::pkcs8::EncodePublicKey as _;
        use rsa::signature::SignatureEncoding as _;

        let claims = r#"{"exp":200,"role":"admin"}"#;
        let ec = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
        let ec_pem = ec
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let auth = AdminAuth::from_public_key_pem(&ec_pem).unwrap();
        let es256 = |input: &[u8]| {
            let signature: p256::ecdsa::Signature = ec.sign(input);
            signature.to_bytes().to_vec()
        };
        auth.check(Some(&jws("ES256", claims, es256)), 150).unwrap();
        // The same key and signature under another algorithm's name, and an EdDSA token.
        assert!(matches!(
            auth.check(Some(&jws("EdDSA", claims, es256)), 150),
            Err(AdminAuthError::Algorithm {
                expected: "ES256",
                ..
            })
        ));
        let other = p256::ecdsa::SigningKey::from_slice(&[6u8; 32]).unwrap();
        let foreign = |input: &[u8]| {
            let signature: p256::ecdsa::Signature = other.sign(input);
            signature.to_bytes().to_vec()
        };
        assert!(matches!(
            auth.check(Some(&jws("ES256", r#"{"exp":201}"#, foreign)), 150),
            Err(AdminAuthError::Signature)
        ));

        let rsa_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let rsa_pem = rsa_key
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        let auth = AdminAuth::from_public_key_pem(&rsa_pem).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key);
        let rs256 = |input: &[u8]| signer.sign(input).to_vec();
        auth.check(Some(&jws("RS256", claims, rs256)), 150).unwrap();
        assert!(matches!(
            auth.check(Some(&jws("RS256", claims, |_| vec![0u8; 256])), 150),
            Err(AdminAuthError::Signature)
        ));
        assert!(matches!(
            auth.check(Some(&jws("ES256", claims, es256)), 150),
            Err(AdminAuthError::Algorithm {
                expected: "RS256",
                ..
            })
        ));

        // A small RSA key is not an admin key.
        let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let small_pem = small
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        assert!(matches!(
            AdminAuth::from_public_key_pem(&small_pem),
            Err(AdminAuthError::Key)
        ));
    }

    #[test]
    fn everything_else_is_refused() {
        let auth = AdminAuth::new(key(1).verifying_key());
        let token = sign_admin_token(&key(1), 100, 200);
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(matches!(
            auth.check(None, 150),
            Err(AdminAuthError::Missing)
        ));
        assert!(matches!(
            auth.check(Some(&token), 150),
            Err(AdminAuthError::Missing)
        ));
        assert!(matches!(
            auth.check(Some(&bearer(&token)), 200),
            Err(AdminAuthError::Expired)
        ));
        assert!(matches!(
            auth.check(Some(&bearer(&token)), 10),
            Err(AdminAuthError::Expired)
        ));
        let foreign = sign_admin_token(&key(2), 100, 200);
        assert!(matches!(
            auth.check(Some(&bearer(&foreign)), 150),
            Err(AdminAuthError::Signature)
        ));
        // Re-sign a longer-lived payload with the wrong key, keep the original signature.
        let parts: Vec<&str> = token.split('.').collect();
        let longer = URL_SAFE_NO_PAD.encode(r#"{"exp":99999}"#);
        let forged = format!("{}.{longer}.{}", parts[0], parts[2]);
        assert!(matches!(
            auth.check(Some(&bearer(&forged)), 150),
            Err(AdminAuthError::Signature)
        ));
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            auth.check(Some(&bearer(&none)), 150),
            Err(AdminAuthError::Algorithm { ref alg, expected: "EdDSA" }) if alg == "none"
        ));
        assert!(matches!(
            auth.check(Some("Bearer x.y"), 150),
            Err(AdminAuthError::Malformed)
        ));
        let no_exp_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#)
        );
        let sig = ed25519_dalek::Signer::sign(&key(1), no_exp_input.as_bytes());
        let no_exp = format!("{no_exp_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        assert!(matches!(
            auth.check(Some(&bearer(&no_exp)), 150),
            Err(AdminAuthError::Expired)
        ));
    }
}
