//! Sessions between `auth` and `attest` (and resource requests authorised by cookie).
//!
//! A session is created by `auth` with a fresh 32-byte nonce and lives for a fixed time. `attest`
//! takes the nonce out of the session before verifying anything, so a nonce is used at most once
//! even when two attestations race. The number of live sessions is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kbs_types::Tee;
use rand::RngCore;
use rand::rngs::OsRng;

use crate::token::TokenClaims;

/// Name of the session cookie.
pub(crate) const COOKIE_NAME: &str = "kbs-session-id";

/// A session id: 16 random bytes as 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Finds and validates the session id in a `Cookie` header value.
    pub fn from_cookie_header(header: &str) -> Option<Self> {
        header.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let valid = value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit());
            (name == COOKIE_NAME && valid).then(|| Self(value.to_ascii_lowercase()))
        })
    }

    /// The id as sent in the cookie.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// No session with this id (never existed, or was purged).
    #[error("no such session")]
    NotFound,
    /// The session has expired.
    #[error("session expired")]
    Expired,
    /// The session's nonce was already used for an attestation.
    #[error("session nonce already used")]
    NonceUsed,
    /// The session has not completed attestation.
    #[error("session is not attested")]
    NotAttested,
    /// Too many live sessions.
    #[error("too many live sessions")]
    Full,
}

#[derive(Debug)]
enum State {
    Challenged { tee: Tee, nonce: String },
    Consumed,
    Attested { claims: Box<TokenClaims> },
}

#[derive(Debug)]
struct Session {
    expires: Instant,
    state: State,
}

/// A new session: its id, the nonce of its challenge and when it expires.
#[derive(Debug)]
pub struct NewSession {
    /// The session id for the cookie.
    pub id: SessionId,
    /// The challenge nonce (standard base64 of 32 random bytes).
    pub nonce: String,
}

/// The live sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<SessionId, Session>>,
}

impl Sessions {
    /// Sessions living `ttl`, at most `max` at once.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lives.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `tee` with a fresh nonce.
    pub(crate) fn create(&self, tee: Tee, now: Instant) -> Result<NewSession, SessionError> {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let nonce = STANDARD.encode(nonce);
        let id = SessionId::generate();
        let mut map = self.lock();
        if map.len() >= self.max {
            map.retain(|_, session| session.expires > now);
            if map.len() >= self.max {
                return Err(SessionError::Full);
            }
        }
        map.insert(
            id.clone(),
            Session {
                expires: now + self.ttl,
                state: State::Challenged {
                    tee,
                    nonce: nonce.clone(),
                },
            },
        );
        Ok(NewSession { id, nonce })
    }

    /// Takes the nonce (and TEE) of a challenged session; the nonce can never be taken again.
    pub(crate) fn take_nonce(
        &self,
        id: &SessionId,
        now: Instant,
    ) -> Result<(Tee, String), SessionError> {
        let mut map = self.lock();
        let session = map.get_mut(id).ok_or(SessionError::NotFound)?;
        if session.expires <= now {
            map.remove(id);
            return Err(SessionError::Expired);
        }
        match std::mem::replace(&mut session.state, State::Consumed) {
            State::Challenged { tee, nonce } => Ok((tee, nonce)),
            other => {
                session.state = other;
                Err(SessionError::NonceUsed)
            }
        }
    }

    /// Marks a session attested with the claims of the token issued for it.
    pub(crate) fn set_attested(&self, id: &SessionId, claims: TokenClaims) {
        if let Some(session) = self.lock().get_mut(id) {
            session.state = State::Attested {
                claims: Box::new(claims),
            };
        }
    }

    /// The token claims of an attested, live session.
    pub(crate) fn attested(
        &self,
        id: &SessionId,
        now: Instant,
    ) -> Result<TokenClaims, SessionError> {
        let mut map = self.lock();
        let session = map.get(id).ok_or(SessionError::NotFound)?;
        if session.expires <= now {
            map.remove(id);
            return Err(SessionError::Expired);
        }
        match &session.state {
            State::Attested { claims } => Ok(claims.as_ref().clone()),
            _ => Err(SessionError::NotAttested),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Session>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a
        // single insert/replace), so a poisoned lock is still usable.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            iss: "i".into(),
            iat: 0,
            exp: 1,
            tee: "sample".into(),
            simulated: true,
            tee_pubkey: serde_json::Value::Null,
            claims: serde_json::Value::Null,
        }
    }

    #[test]
    fn nonce_is_fresh_and_single_use() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let a = sessions.create(Tee::Sample, now).unwrap();
        let b = sessions.create(Tee::Sample, now).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.id, b.id);
        assert_eq!(STANDARD.decode(&a.nonce).unwrap().len(), 32);
        assert_eq!(
            sessions.take_nonce(&a.id, now).unwrap(),
            (Tee::Sample, a.nonce.clone())
        );
        assert_eq!(
            sessions.take_nonce(&a.id, now),
            Err(SessionError::NonceUsed)
        );
        sessions.set_attested(&a.id, claims());
        assert_eq!(
            sessions.take_nonce(&a.id, now),
            Err(SessionError::NonceUsed)
        );
        assert_eq!(sessions.attested(&a.id, now).unwrap(), claims());
        assert_eq!(
            sessions.attested(&b.id, now),
            Err(SessionError::NotAttested)
        );
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let now = Instant::now();
        let a = sessions.create(Tee::Snp, now).unwrap();
        sessions.create(Tee::Snp, now).unwrap();
        assert_eq!(
            sessions.create(Tee::Snp, now).unwrap_err(),
            SessionError::Full
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(
            sessions.take_nonce(&a.id, later),
            Err(SessionError::Expired)
        );
        assert_eq!(
            sessions.take_nonce(&a.id, later),
            Err(SessionError::NotFound)
        );
        // Expired sessions are purged to make room.
        sessions.create(Tee::Snp, later).unwrap();
    }

    #[test]
    fn cookie_parsing_validates_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        let parsed = SessionId::from_cookie_header(&format!("a=b; kbs-session-id={id}")).unwrap();
        assert_eq!(parsed.as_str(), id);
        assert!(SessionId::from_cookie_header("kbs-session-id=../../etc").is_none());
        assert!(SessionId::from_cookie_header("kbs-session-id=").is_none());
        assert!(SessionId::from_cookie_header("other=0123456789abcdef0123456789abcdef").is_none());
    }
}
