//! Challenges that replicas on a shared database do not store.
//!
//! With a database, `auth` writes nothing: the session cookie itself carries the session id, the
//! TEE, the nonce and the expiry, authenticated with HMAC-SHA256 under a key derived from the
//! operator's at-rest key, which every replica has. Any replica checks it without a round trip.
//! The database learns of a session only when its evidence has been verified, with one
//! `INSERT … ON CONFLICT DO NOTHING` of the id: the first verified attestation spends the nonce,
//! on whichever replica, and any later one is refused. So a handshake costs the database two
//! statements (that insert, and the resource read), and a flood of `auth` calls costs it nothing.
//!
//! The cookie is `base64url(version (1) || id (16) || expiry in Unix ms (8, big-endian) ||
//! nonce (32) || TEE name || HMAC-SHA256 tag (32))`. Nothing in it is secret: the nonce is in
//! the challenge body anyway. The tag only makes it unforgeable, so a client cannot pick its own
//! nonce, extend its expiry or name another session's id.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kbs_types::Tee;
use rand::RngCore;
use rand::rngs::OsRng;
use ring::hmac;

use crate::session::{MAX_COOKIE_LEN, SessionError, SessionId};

/// The one cookie layout this broker issues and reads.
const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 32;
/// The longest TEE name a cookie may carry (kbs-types' longest, `sampledevice`, is 12 bytes).
const MAX_TEE_LEN: usize = 32;
const FIXED_LEN: usize = 1 + ID_LEN + 8 + NONCE_LEN;

// The longest cookie (the longest TEE name) is one the cookie parser takes.
const _: () = assert!((FIXED_LEN + MAX_TEE_LEN + TAG_LEN).div_ceil(3) * 4 <= MAX_COOKIE_LEN);

/// A challenge read back from its cookie: authentic and not yet expired by this replica's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// The session id (32 lowercase hex characters): the database row a verified attestation
    /// writes.
    pub(crate) id: String,
    pub(crate) tee: Tee,
    /// Standard base64 of the 32 nonce bytes, as sent in the challenge body.
    pub(crate) nonce: String,
    /// Expiry, in milliseconds since the Unix epoch.
    pub(crate) expires_ms: i64,
}

/// The keys that authenticate challenge cookies: the current one tags and checks, the previous
/// ones (during an at-rest key rotation) only check.
#[derive(Clone)]
pub(crate) struct ChallengeKeys {
    current: hmac::Key,
    previous: Vec<hmac::Key>,
}

impl std::fmt::Debug for ChallengeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeKeys")
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

/// Derives the challenge key from an at-rest key's 32 bytes (HMAC-SHA256 of a label of its
/// own, so the key that seals resources is never itself used for anything else).
pub(crate) fn derive_key(at_rest_key: &[u8]) -> hmac::Key {
    let prf = hmac::Key::new(hmac::HMAC_SHA256, at_rest_key);
    let derived = hmac::sign(&prf, b"tsuba-kbs challenge cookie v1");
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

impl ChallengeKeys {
    pub(crate) fn new(current: hmac::Key, previous: Vec<hmac::Key>) -> Self {
        Self { current, previous }
    }

    /// A new challenge for `tee`, living `ttl` from `now`, and its cookie value.
    pub(crate) fn issue(&self, tee: Tee, ttl: Duration, now: SystemTime) -> (SessionId, Challenge) {
        let mut id = [0u8; ID_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut id);
        OsRng.fill_bytes(&mut nonce);
        let expires_ms =
            unix_ms(now).saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let tee_name = tee.to_string();
        let mut bytes = Vec::with_capacity(FIXED_LEN + tee_name.len() + TAG_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(&expires_ms.to_be_bytes());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(tee_name.as_bytes());
        let tag = hmac::sign(&self.current, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        let cookie = SessionId::from_value(URL_SAFE_NO_PAD.encode(&bytes));
        let challenge = Challenge {
            id: hex::encode(id),
            tee,
            nonce: STANDARD.encode(nonce),
            expires_ms,
        };
        (cookie, challenge)
    }

    /// The challenge in `cookie`, if one of these keys tagged it and it has not expired at `now`.
    /// A cookie that is not ours (forged, altered, from a broker with another key, or an
    /// in-process session id) is [`SessionError::NotFound`].
    pub(crate) fn open(
        &self,
        cookie: &SessionId,
        now: SystemTime,
    ) -> Result<Challenge, SessionError> {
        let value = cookie.as_str();
        if value.len() > MAX_COOKIE_LEN {
            return Err(SessionError::NotFound);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| SessionError::NotFound)?;
        if bytes.len() < FIXED_LEN + 1 + TAG_LEN || bytes.first() != Some(&VERSION) {
            return Err(SessionError::NotFound);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let authentic = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| hmac::verify(key, body, tag).is_ok());
        if !authentic {
            return Err(SessionError::NotFound);
        }
        // Authentic, so written by `issue`: the layout below holds.
        let (id, rest) = body[1..].split_at(ID_LEN);
        let (expiry, rest) = rest.split_at(8);
        let (nonce, tee_name) = rest.split_at(NONCE_LEN);
        let mut expiry_bytes = [0u8; 8];
        expiry_bytes.copy_from_slice(expiry);
        let expires_ms = i64::from_be_bytes(expiry_bytes);
        let tee = std::str::from_utf8(tee_name)
            .ok()
            .and_then(|name| name.parse::<Tee>().ok())
            .ok_or(SessionError::NotFound)?;
        if expires_ms <= unix_ms(now) {
            return Err(SessionError::Expired);
        }
        Ok(Challenge {
            id: hex::encode(id),
            tee,
            nonce: STANDARD.encode(nonce),
            expires_ms,
        })
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> ChallengeKeys {
        ChallengeKeys::new(derive_key(&[seed; 32]), Vec::new())
    }

    const TTL: Duration = Duration::from_secs(300);

    #[test]
    fn an_issued_challenge_opens_with_what_was_issued() {
        let keys = keys(1);
        let now = SystemTime::now();
        let (cookie, issued) = keys.issue(Tee::Snp, TTL, now);
        assert_eq!(keys.open(&cookie, now).unwrap(), issued);
        assert_eq!(issued.id.len(), 32);
        assert_eq!(STANDARD.decode(&issued.nonce).unwrap().len(), NONCE_LEN);
        assert_eq!(issued.expires_ms, unix_ms(now) + 300_000);
        // Fresh id and nonce each time.
        let (_, other) = keys.issue(Tee::Snp, TTL, now);
        assert_ne!(other.id, issued.id);
        assert_ne!(other.nonce, issued.nonce);
        // The cookie survives the cookie header parser.
        let header = format!("x=y; kbs-session-id={}", cookie.as_str());
        assert_eq!(
            SessionId::from_cookie_header(&header).as_ref(),
            Some(&cookie)
        );
        assert!(cookie.as_str().len() <= MAX_COOKIE_LEN);
    }

    #[test]
    fn every_tee_name_fits_and_round_trips() {
        let keys = keys(1);
        let now = SystemTime::now();
        for tee in [
            Tee::Sample,
            Tee::SampleDevice,
            Tee::Snp,
            Tee::Tdx,
            Tee::AzSnpVtpm,
            Tee::NvidiaDpu,
        ] {
            let (cookie, issued) = keys.issue(tee, TTL, now);
            assert!(tee.to_string().len() <= MAX_TEE_LEN);
            assert_eq!(keys.open(&cookie, now).unwrap().tee, issued.tee);
        }
    }

    #[test]
    fn an_expired_challenge_is_refused() {
        let keys = keys(1);
        let now = SystemTime::now();
        let (cookie, _) = keys.issue(Tee::Snp, TTL, now);
        assert!(
            keys.open(&cookie, now + TTL - Duration::from_millis(1))
                .is_ok()
        );
        assert_eq!(keys.open(&cookie, now + TTL), Err(SessionError::Expired));
    }

    #[test]
    fn a_cookie_altered_anywhere_or_tagged_by_another_key_is_refused() {
        let keys = keys(1);
        let now = SystemTime::now();
        let (cookie, _) = keys.issue(Tee::Snp, TTL, now);
        let bytes = URL_SAFE_NO_PAD.decode(cookie.as_str()).unwrap();
        for index in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[index] ^= 0x01;
            let altered = SessionId::from_value(URL_SAFE_NO_PAD.encode(&altered));
            assert_eq!(
                keys.open(&altered, now),
                Err(SessionError::NotFound),
                "byte {index}"
            );
        }
        // Another broker's key does not open it.
        assert_eq!(
            self::keys(2).open(&cookie, now),
            Err(SessionError::NotFound)
        );
        // Truncated, extended, empty, an in-process session id, not base64url.
        let truncated = SessionId::from_value(URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]));
        let mut longer = bytes.clone();
        longer.push(0);
        let longer = SessionId::from_value(URL_SAFE_NO_PAD.encode(&longer));
        let oversized = SessionId::from_value("A".repeat(MAX_COOKIE_LEN + 4));
        for bad in [
            truncated,
            longer,
            oversized,
            SessionId::from_value(String::new()),
            SessionId::from_value("0123456789abcdef0123456789abcdef".into()),
            SessionId::from_value("not/base64".into()),
        ] {
            assert_eq!(keys.open(&bad, now), Err(SessionError::NotFound), "{bad:?}");
        }
    }

    #[test]
    fn a_forged_cookie_with_a_chosen_nonce_or_expiry_is_refused() {
        let keys = keys(1);
        let now = SystemTime::now();
        let (cookie, _) = keys.issue(Tee::Snp, TTL, now);
        let mut bytes = URL_SAFE_NO_PAD.decode(cookie.as_str()).unwrap();
        // Push the expiry a year on and keep the old tag.
        let later = unix_ms(now) + 365 * 24 * 3600 * 1000;
        bytes[1 + ID_LEN..1 + ID_LEN + 8].copy_from_slice(&later.to_be_bytes());
        let forged = SessionId::from_value(URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(keys.open(&forged, now), Err(SessionError::NotFound));
    }

    #[test]
    fn a_previous_key_still_opens_during_a_rotation_and_no_longer_tags() {
        let old = keys(1);
        let now = SystemTime::now();
        let (cookie, issued) = old.issue(Tee::Tdx, TTL, now);
        let rotated = ChallengeKeys::new(derive_key(&[2; 32]), vec![derive_key(&[1; 32])]);
        assert_eq!(rotated.open(&cookie, now).unwrap(), issued);
        let (new_cookie, _) = rotated.issue(Tee::Tdx, TTL, now);
        assert_eq!(old.open(&new_cookie, now), Err(SessionError::NotFound));
    }
}
