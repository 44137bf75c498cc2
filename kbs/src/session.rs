//! Sessions between `auth` and `attest` (and resource requests authorised by cookie).
//!
//! A session is created by `auth` with a fresh 32-byte nonce and lives for a fixed time. The first
//! `attest` whose evidence verifies spends the nonce (whether the policy then allows it or not),
//! under the table's lock, so a nonce serves one attestation even when several race; a request
//! refused before that (malformed, evidence bound to another nonce, a bad signature) leaves it
//! usable, so nobody who sees a guest's cookie can burn its challenge with evidence that does not
//! verify.
//!
//! The number of live sessions is bounded, and so is the number of sessions one client (IP
//! address) has waiting for attestation: unauthenticated `auth` calls from one place cannot fill
//! the table, and when it is full a session still waiting for its attestation makes room before
//! any attested one. (Replicas on a database store no challenge at all: `crate::challenge`.)

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
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

/// Longest session cookie value taken (a shared store's challenge cookie is the longest).
pub(crate) const MAX_COOKIE_LEN: usize = 192;

/// A session cookie's value: in this process, 16 random bytes as 32 lowercase hex characters;
/// with a shared store, a challenge cookie (`crate::challenge`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub(crate) fn generate() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// A cookie value as it is (checked only when used).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_value(value: String) -> Self {
        Self(value)
    }

    /// Finds the session cookie in a `Cookie` header value: an in-process session id (hex) or a
    /// shared store's challenge cookie (base64url), bounded in length.
    pub fn from_cookie_header(header: &str) -> Option<Self> {
        header.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let valid = !value.is_empty()
                && value.len() <= MAX_COOKIE_LEN
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            (name == COOKIE_NAME && valid).then(|| Self(value.to_owned()))
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
    /// Too many live sessions, none of them waiting for attestation.
    #[error("too many live sessions")]
    Full,
    /// This client already has as many sessions waiting for attestation as it may.
    #[error("too many sessions waiting for attestation from this client")]
    ClientLimit,
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
    client: ClientKey,
}

/// Who asked for a session: the client's IP address (an IPv6 address by its /64, which one
/// machine usually holds whole), or `None` when the transport gives no address.
pub(crate) type ClientKey = Option<IpAddr>;

/// The key counting `addr`'s sessions.
pub(crate) fn client_key(addr: Option<IpAddr>) -> ClientKey {
    addr.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    })
}

/// A fresh challenge nonce: standard base64 of 32 random bytes.
pub(crate) fn fresh_nonce() -> String {
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    STANDARD.encode(nonce)
}

/// A new session: its id, the nonce of its challenge and when it expires.
#[derive(Debug)]
pub struct NewSession {
    /// The session id for the cookie.
    pub id: SessionId,
    /// The challenge nonce (standard base64 of 32 random bytes).
    pub nonce: String,
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<SessionId, Session>,
    /// Ids in creation order; an id whose session is no longer challenged is skipped (and
    /// dropped) when met.
    challenged_order: VecDeque<SessionId>,
    /// Challenged sessions per client.
    per_client: HashMap<ClientKey, usize>,
    /// When expired sessions were last swept out (a sweep walks the whole table, so it runs
    /// at most once per [`SWEEP_INTERVAL`]).
    last_sweep: Option<Instant>,
}

/// Shortest time between two sweeps of expired sessions.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Table {
    /// Removes `id`, keeping the per-client count right.
    fn remove(&mut self, id: &SessionId) {
        if let Some(session) = self.map.remove(id)
            && matches!(session.state, State::Challenged { .. })
        {
            self.uncount(session.client);
        }
    }

    fn uncount(&mut self, client: ClientKey) {
        if let Some(count) = self.per_client.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// The live session `id`; an expired one is removed.
    fn live(&mut self, id: &SessionId, now: Instant) -> Result<&mut Session, SessionError> {
        let expired = self.map.get(id).ok_or(SessionError::NotFound)?.expires <= now;
        if expired {
            self.remove(id);
            return Err(SessionError::Expired);
        }
        self.map.get_mut(id).ok_or(SessionError::NotFound)
    }

    /// Removes expired sessions, unless that was done less than [`SWEEP_INTERVAL`] ago.
    fn purge_expired(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        let expired: Vec<SessionId> = self
            .map
            .iter()
            .filter(|(_, session)| session.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }

    /// Evicts the oldest session still waiting for its attestation. False when there is none.
    fn evict_oldest_challenged(&mut self) -> bool {
        while let Some(id) = self.challenged_order.pop_front() {
            if self
                .map
                .get(&id)
                .is_some_and(|session| matches!(session.state, State::Challenged { .. }))
            {
                self.remove(&id);
                return true;
            }
        }
        false
    }
}

/// The live sessions.
#[derive(Debug)]
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    max_per_client: usize,
    table: Mutex<Table>,
}

impl Sessions {
    /// Sessions living `ttl`, at most `max` at once, and at most `max_per_client` waiting for
    /// their attestation per client.
    pub(crate) fn new(ttl: Duration, max: usize, max_per_client: usize) -> Self {
        Self {
            ttl,
            max,
            max_per_client,
            table: Mutex::new(Table::default()),
        }
    }

    /// Starts a session for `tee` with a fresh nonce, asked for by `client`. A client with
    /// `max_per_client` sessions waiting for attestation gets none; when the table is full, the
    /// oldest session waiting for attestation (of any client) makes room, never an attested
    /// one.
    pub(crate) fn create(
        &self,
        tee: Tee,
        client: ClientKey,
        now: Instant,
    ) -> Result<NewSession, SessionError> {
        let nonce = fresh_nonce();
        let id = SessionId::generate();
        let mut table = self.lock();
        if table.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            table.purge_expired(now);
            if table.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
                return Err(SessionError::ClientLimit);
            }
        }
        if table.map.len() >= self.max {
            table.purge_expired(now);
            if table.map.len() >= self.max && !table.evict_oldest_challenged() {
                return Err(SessionError::Full);
            }
        }
        // Stale ids (sessions attested or gone) are dropped once they outnumber the live ones.
        if table.challenged_order.len() > self.max.saturating_mul(2) {
            let Table {
                map,
                challenged_order,
                ..
            } = &mut *table;
            challenged_order.retain(|id| {
                map.get(id)
                    .is_some_and(|session| matches!(session.state, State::Challenged { .. }))
            });
        }
        table.map.insert(
            id.clone(),
            Session {
                expires: now + self.ttl,
                state: State::Challenged {
                    tee,
                    nonce: nonce.clone(),
                },
                client,
            },
        );
        table.challenged_order.push_back(id.clone());
        *table.per_client.entry(client).or_insert(0) += 1;
        Ok(NewSession { id, nonce })
    }

    /// The TEE and nonce of a live session still waiting for its attestation. The nonce stays
    /// in the session until [`Sessions::settle`] spends it.
    pub(crate) fn challenge(
        &self,
        id: &SessionId,
        now: Instant,
    ) -> Result<(Tee, String), SessionError> {
        let mut table = self.lock();
        let session = table.live(id, now)?;
        match &session.state {
            State::Challenged { tee, nonce } => Ok((*tee, nonce.clone())),
            _ => Err(SessionError::NonceUsed),
        }
    }

    /// Spends the nonce of a session whose evidence was verified: it becomes attested with
    /// `claims`, or, when the policy denied it (`None`), spent. Only the first of attestations
    /// racing on one session settles it; the others get [`SessionError::NonceUsed`].
    pub(crate) fn settle(
        &self,
        id: &SessionId,
        claims: Option<TokenClaims>,
        now: Instant,
    ) -> Result<(), SessionError> {
        let mut table = self.lock();
        let session = table.live(id, now)?;
        if !matches!(session.state, State::Challenged { .. }) {
            return Err(SessionError::NonceUsed);
        }
        session.state = match claims {
            Some(claims) => State::Attested {
                claims: Box::new(claims),
            },
            None => State::Consumed,
        };
        let client = session.client;
        table.uncount(client);
        Ok(())
    }

    /// The token claims of an attested, live session.
    pub(crate) fn attested(
        &self,
        id: &SessionId,
        now: Instant,
    ) -> Result<TokenClaims, SessionError> {
        let mut table = self.lock();
        let session = table.live(id, now)?;
        match &session.state {
            State::Attested { claims } => Ok(claims.as_ref().clone()),
            _ => Err(SessionError::NotAttested),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table inconsistent enough to matter
        // (at worst a per-client count is off until its sessions expire), so a poisoned lock
        // is still usable.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims::new(
            crate::token::Attested {
                tee: "sample".into(),
                claims: serde_json::Value::Null,
                debug: false,
                simulated: true,
                init_data: None,
                init_data_claims: None,
                report_data: String::new(),
                tee_pubkey: serde_json::Value::Null,
                nonce: String::new(),
            },
            0,
            1,
        )
    }

    #[test]
    fn nonce_is_fresh_and_single_use() {
        let sessions = Sessions::new(Duration::from_secs(60), 10, 10);
        let now = Instant::now();
        let a = sessions.create(Tee::Sample, None, now).unwrap();
        let b = sessions.create(Tee::Sample, None, now).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.id, b.id);
        assert_eq!(STANDARD.decode(&a.nonce).unwrap().len(), 32);
        assert_eq!(
            sessions.challenge(&a.id, now).unwrap(),
            (Tee::Sample, a.nonce.clone())
        );
        // Reading the challenge does not spend it; settling does, once.
        assert_eq!(sessions.challenge(&a.id, now).unwrap().1, a.nonce);
        sessions.settle(&a.id, Some(claims()), now).unwrap();
        assert_eq!(sessions.challenge(&a.id, now), Err(SessionError::NonceUsed));
        assert_eq!(
            sessions.settle(&a.id, Some(claims()), now),
            Err(SessionError::NonceUsed)
        );
        assert_eq!(sessions.attested(&a.id, now).unwrap(), claims());
        assert_eq!(
            sessions.attested(&b.id, now),
            Err(SessionError::NotAttested)
        );
        // A denied attestation spends the nonce and attests nothing.
        sessions.settle(&b.id, None, now).unwrap();
        assert_eq!(
            sessions.settle(&b.id, Some(claims()), now),
            Err(SessionError::NonceUsed)
        );
        assert_eq!(
            sessions.attested(&b.id, now),
            Err(SessionError::NotAttested)
        );
        let later = now + Duration::from_secs(61);
        let c = sessions.create(Tee::Sample, None, now).unwrap();
        assert_eq!(
            sessions.settle(&c.id, Some(claims()), later),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60), 2, 10);
        let now = Instant::now();
        let a = sessions.create(Tee::Snp, None, now).unwrap();
        let b = sessions.create(Tee::Snp, None, now).unwrap();
        for id in [&a.id, &b.id] {
            sessions.settle(id, Some(claims()), now).unwrap();
        }
        // Full of attested sessions: nothing to evict.
        assert_eq!(
            sessions.create(Tee::Snp, None, now).unwrap_err(),
            SessionError::Full
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(sessions.attested(&a.id, later), Err(SessionError::Expired));
        assert_eq!(sessions.attested(&a.id, later), Err(SessionError::NotFound));
        // Expired sessions are purged to make room.
        sessions.create(Tee::Snp, None, later).unwrap();
        sessions.create(Tee::Snp, None, later).unwrap();
    }

    fn ip(text: &str) -> ClientKey {
        client_key(Some(text.parse().unwrap()))
    }

    #[test]
    fn one_client_cannot_hold_more_than_its_share_of_challenges() {
        let sessions = Sessions::new(Duration::from_secs(60), 100, 3);
        let now = Instant::now();
        let mine: Vec<_> = (0..3)
            .map(|_| sessions.create(Tee::Snp, ip("192.0.2.1"), now).unwrap())
            .collect();
        assert_eq!(
            sessions.create(Tee::Snp, ip("192.0.2.1"), now).unwrap_err(),
            SessionError::ClientLimit
        );
        // Another client is not affected.
        sessions.create(Tee::Snp, ip("192.0.2.2"), now).unwrap();
        // A challenge answered (nonce spent) no longer counts against the client.
        sessions.settle(&mine[0].id, None, now).unwrap();
        sessions.create(Tee::Snp, ip("192.0.2.1"), now).unwrap();
        assert_eq!(
            sessions.create(Tee::Snp, ip("192.0.2.1"), now).unwrap_err(),
            SessionError::ClientLimit
        );
        // Expired challenges stop counting too.
        let later = now + Duration::from_secs(61);
        for _ in 0..3 {
            sessions.create(Tee::Snp, ip("192.0.2.1"), later).unwrap();
        }
        // An IPv6 client is counted by its /64.
        let v6 = Sessions::new(Duration::from_secs(60), 100, 2);
        v6.create(Tee::Snp, ip("2001:db8::1"), now).unwrap();
        v6.create(Tee::Snp, ip("2001:db8::ffff:2"), now).unwrap();
        assert_eq!(
            v6.create(Tee::Snp, ip("2001:db8::3"), now).unwrap_err(),
            SessionError::ClientLimit
        );
        v6.create(Tee::Snp, ip("2001:db8:0:1::1"), now).unwrap();
    }

    #[test]
    fn a_full_table_evicts_challenges_before_attested_sessions() {
        let sessions = Sessions::new(Duration::from_secs(60), 3, 10);
        let now = Instant::now();
        let attested = sessions.create(Tee::Snp, ip("192.0.2.1"), now).unwrap();
        sessions.settle(&attested.id, Some(claims()), now).unwrap();
        let b = sessions.create(Tee::Snp, ip("192.0.2.2"), now).unwrap();
        let c = sessions.create(Tee::Snp, ip("192.0.2.3"), now).unwrap();
        // Full: the oldest challenge (b) makes room, then c.
        let d = sessions.create(Tee::Snp, ip("192.0.2.4"), now).unwrap();
        assert_eq!(sessions.challenge(&b.id, now), Err(SessionError::NotFound));
        sessions.create(Tee::Snp, ip("192.0.2.5"), now).unwrap();
        assert_eq!(sessions.challenge(&c.id, now), Err(SessionError::NotFound));
        assert_eq!(sessions.attested(&attested.id, now).unwrap(), claims());
        // Once every session is attested, nothing is evicted: the table is full.
        assert_eq!(sessions.challenge(&d.id, now).unwrap().1, d.nonce);
        sessions.settle(&d.id, Some(claims()), now).unwrap();
        let e = sessions.create(Tee::Snp, ip("192.0.2.6"), now).unwrap();
        let _ = sessions.create(Tee::Snp, ip("192.0.2.7"), now).unwrap();
        assert_eq!(sessions.challenge(&e.id, now), Err(SessionError::NotFound));
        let table = sessions.lock();
        assert_eq!(table.map.len(), 3);
        assert_eq!(table.per_client.values().sum::<usize>(), 1);
    }

    #[test]
    fn an_auth_flood_from_one_address_does_not_lock_out_other_tenants() {
        let sessions = Sessions::new(Duration::from_secs(300), 65_536, 64);
        let now = Instant::now();
        let attacker = ip("203.0.113.9");
        let granted = (0..65_536)
            .filter(|_| sessions.create(Tee::Snp, attacker, now).is_ok())
            .count();
        assert_eq!(granted, 64);
        let tenant = sessions.create(Tee::Snp, ip("198.51.100.7"), now).unwrap();
        sessions.settle(&tenant.id, Some(claims()), now).unwrap();
        // A flood from many addresses fills the table with challenges; the attested tenant's
        // session survives and a new tenant still gets a challenge.
        for i in 0..70_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            sessions.create(Tee::Snp, Some(addr), now).unwrap();
        }
        assert_eq!(sessions.attested(&tenant.id, now).unwrap(), claims());
        sessions.create(Tee::Snp, ip("198.51.100.8"), now).unwrap();
        assert!(sessions.lock().challenged_order.len() <= 2 * 65_536 + 1);
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
