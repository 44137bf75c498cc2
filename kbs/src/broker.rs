//! The broker's protocol logic (auth, attest, resource, admin), independent of HTTP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use kbs_types::{Attestation, Tee, TeePubKey};
use serde::Deserialize;
use serde_json::Value;

use crate::admin::AdminAuth;
use crate::binding::{BindingDigest, REPORT_DATA_LEN};
#[cfg(feature = "postgres")]
use crate::challenge::Challenge;
use crate::error::KbsError;
use crate::init_data;
use crate::jwe::{self, FlattenedJwe};
use crate::policy::{self, Decision, Policy, ResourceRequest};
#[cfg(feature = "postgres")]
use crate::postgres::{PgStore, Spent};
use crate::session::{NewSession, SessionError, SessionId, Sessions, client_key};
use crate::store::{ResourcePath, StateStore, Store, StoreError};
use crate::token::{self, Attested, TokenClaims, TokenSigner};
use crate::verifier::VerifierSet;

/// Most times one attestation is appraised while the shared policies keep changing under it.
#[cfg(feature = "postgres")]
const MAX_APPRAISALS: u32 = 4;

/// The one protocol version this broker speaks.
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// How the broker runs.
#[derive(Debug)]
pub struct BrokerConfig {
    /// Directory holding resources, policies, reference values and the token key.
    pub state_dir: PathBuf,
    /// The administrator's key.
    pub admin: AdminAuth,
    /// How long a session (auth → attest → resource by cookie) lives.
    pub session_ttl: Duration,
    /// How long an attestation token is valid.
    pub token_ttl: Duration,
    /// Most live sessions at once, in this process (a database stores no challenge to bound).
    pub max_sessions: usize,
    /// Most sessions one client (IP address, IPv6 /64) may have waiting for attestation, in this
    /// process.
    pub max_sessions_per_client: usize,
    /// INSECURE: let the default resource policy release resources to guests whose token is
    /// marked simulated.
    pub insecure_release_to_simulated: bool,
}

impl BrokerConfig {
    /// Defaults as Trustee's: 5-minute sessions and tokens, at most 65,536 live sessions; and at
    /// most 256 sessions waiting for attestation per client address.
    pub fn new(state_dir: PathBuf, admin: AdminAuth) -> Self {
        Self {
            state_dir,
            admin,
            session_ttl: Duration::from_secs(300),
            token_ttl: Duration::from_secs(300),
            max_sessions: 65_536,
            max_sessions_per_client: 256,
            insecure_release_to_simulated: false,
        }
    }
}

/// Which policy an admin call addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Decides whether verified evidence earns a token.
    Attestation,
    /// Decides which attested guest may read which resource.
    Resource,
}

struct Policies {
    attestation: Policy,
    resource: Policy,
}

/// What the broker derives from its store: compiled policies and the token key, as of one
/// generation of a shared store.
struct Loaded {
    /// The shared store's generation these were read at (`None`: a store only this process
    /// writes, kept current by the admin calls themselves).
    generation: Option<i64>,
    policies: Policies,
    signer: TokenSigner,
}

/// An attested session's token claims, or why there are none.
type SessionClaims = Result<TokenClaims, SessionError>;

/// The challenge an attestation answers.
enum Answered {
    /// A session in this process's table.
    Memory { tee: Tee, nonce: String },
    /// A challenge cookie that every replica of a database checks.
    #[cfg(feature = "postgres")]
    Shared(Challenge),
}

impl Answered {
    fn tee(&self) -> Tee {
        match self {
            Self::Memory { tee, .. } => *tee,
            #[cfg(feature = "postgres")]
            Self::Shared(challenge) => challenge.tee,
        }
    }

    fn nonce(&self) -> &str {
        match self {
            Self::Memory { nonce, .. } => nonce,
            #[cfg(feature = "postgres")]
            Self::Shared(challenge) => &challenge.nonce,
        }
    }
}

/// Evidence that verified, ready for the attestation policy.
struct Verified {
    /// The attestation policy's input.
    input: Value,
    /// What the token will say.
    attested: Attested,
    /// When the evidence was verified (Unix seconds): the token's `iat`.
    iat: u64,
}

/// The attestation policy's outcome.
enum Appraisal {
    Allowed { claims: TokenClaims, token: String },
    Denied(Vec<String>),
}

impl Appraisal {
    /// The session's claims when allowed.
    fn claims(&self) -> Option<&TokenClaims> {
        match self {
            Self::Allowed { claims, .. } => Some(claims),
            Self::Denied(_) => None,
        }
    }
}

/// A resource read ahead of the policy decision (still sealed), or not read yet.
enum Prefetched {
    No,
    #[cfg(feature = "postgres")]
    Sealed(Option<Vec<u8>>),
}

/// Where sessions and used admin tokens live: in this process, or in the database that every
/// replica shares.
enum Exchange {
    Memory(Sessions),
    #[cfg(feature = "postgres")]
    Shared(Arc<PgStore>),
}

/// A running broker's state.
pub struct Broker {
    config: BrokerConfig,
    verifiers: VerifierSet,
    exchange: Exchange,
    store: Arc<dyn StateStore>,
    /// The trust mode the token key must belong to.
    mode: String,
    loaded: RwLock<Arc<Loaded>>,
    /// Serialises admin updates so policy recompilation sees a consistent store.
    admin_lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("verifiers", &self.verifiers)
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

/// The response to `auth`: the new session and its challenge body.
#[derive(Debug)]
pub struct AuthResponse {
    /// The session, for the cookie.
    pub session: NewSession,
    /// When the session expires.
    pub expires: SystemTime,
    /// The challenge JSON body.
    pub challenge: Value,
}

#[derive(Deserialize)]
struct AuthRequest {
    version: String,
    tee: String,
    #[serde(rename = "extra-params", default)]
    _extra_params: Value,
}

impl Broker {
    /// Opens the state directory (creating the token key on first start) and loads policies.
    pub fn new(config: BrokerConfig, verifiers: VerifierSet) -> Result<Self, KbsError> {
        let store = Store::open(&config.state_dir).map_err(KbsError::Store)?;
        let sessions = Sessions::new(
            config.session_ttl,
            config.max_sessions,
            config.max_sessions_per_client,
        );
        Self::build(
            config,
            verifiers,
            Arc::new(store),
            Exchange::Memory(sessions),
        )
    }

    /// A replica on a PostgreSQL store shared with other replicas: sessions, nonces and used
    /// admin tokens live in the database too (`config.state_dir` is not used).
    #[cfg(feature = "postgres")]
    pub fn with_postgres(
        config: BrokerConfig,
        verifiers: VerifierSet,
        store: Arc<PgStore>,
    ) -> Result<Self, KbsError> {
        let shared: Arc<dyn StateStore> = store.clone();
        Self::build(config, verifiers, shared, Exchange::Shared(store))
    }

    fn build(
        config: BrokerConfig,
        verifiers: VerifierSet,
        store: Arc<dyn StateStore>,
        exchange: Exchange,
    ) -> Result<Self, KbsError> {
        let mode = trust_mode(&verifiers, &config);
        ensure_token_key(store.as_ref(), &mode)?;
        let generation = store.generation().map_err(KbsError::Store)?;
        let loaded = load(store.as_ref(), &mode, generation)?;
        if verifiers.trust().is_insecure() {
            tracing::warn!(
                options = ?verifiers.trust().insecure_options(),
                "INSECURE: accepting simulated or sample evidence; every token is marked simulated"
            );
        }
        if config.insecure_release_to_simulated {
            tracing::warn!(
                "INSECURE: the default resource policy releases resources to simulated guests"
            );
        }
        Ok(Self {
            config,
            verifiers,
            exchange,
            store,
            mode,
            loaded: RwLock::new(Arc::new(loaded)),
            admin_lock: std::sync::Mutex::new(()),
        })
    }

    /// Whether the broker can serve now: its store is reachable (and, for a database,
    /// migrated to this broker's schema).
    pub fn ready(&self) -> Result<(), KbsError> {
        self.store.check_ready().map_err(KbsError::NotReady)
    }

    /// Policies and token key as of `generation` of a shared store: what is loaded, or, when the
    /// store has moved on, freshly read from it. Never older than `generation`.
    fn current(&self, generation: Option<i64>) -> Result<Arc<Loaded>, KbsError> {
        let loaded = Arc::clone(&self.read_loaded());
        match generation {
            Some(generation) if loaded.generation != Some(generation) => {
                let fresh = Arc::new(load(self.store.as_ref(), &self.mode, Some(generation))?);
                *self.write_loaded() = Arc::clone(&fresh);
                tracing::info!(
                    generation,
                    "shared state changed: policies and token key reloaded"
                );
                Ok(fresh)
            }
            _ => Ok(loaded),
        }
    }

    /// What is current now.
    fn current_now(&self) -> Result<Arc<Loaded>, KbsError> {
        let generation = self.store.generation().map_err(KbsError::Store)?;
        self.current(generation)
    }

    /// After an admin change: reload from the store.
    fn reload_after_change(&self) -> Result<(), KbsError> {
        let generation = self.store.generation().map_err(KbsError::Store)?;
        let fresh = Arc::new(load(self.store.as_ref(), &self.mode, generation)?);
        *self.write_loaded() = fresh;
        Ok(())
    }

    /// `POST /kbs/v0/auth` from `client` (the peer's address, when the transport knows it).
    pub fn auth(&self, client: Option<IpAddr>, body: &[u8]) -> Result<AuthResponse, KbsError> {
        let request: AuthRequest =
            serde_json::from_slice(body).map_err(KbsError::MalformedRequest)?;
        if request.version != PROTOCOL_VERSION {
            return Err(KbsError::ProtocolVersion {
                version: request.version,
            });
        }
        let unsupported = || KbsError::UnsupportedTee {
            tee: request.tee.clone(),
        };
        let tee = kbs_types::Tee::from_str(&request.tee).map_err(|_| unsupported())?;
        if !self.verifiers.accepts(tee) {
            return Err(unsupported());
        }
        let session = match &self.exchange {
            Exchange::Memory(sessions) => sessions
                .create(tee, client_key(client), Instant::now())
                .map_err(KbsError::Session)?,
            // Nothing is stored: the cookie carries the challenge, tagged for every replica.
            // While the database is known to be down, no challenge is handed out that could not
            // be answered.
            #[cfg(feature = "postgres")]
            Exchange::Shared(db) => {
                db.check_reachable().map_err(KbsError::Store)?;
                let (id, challenge) =
                    db.challenges()
                        .issue(tee, self.config.session_ttl, SystemTime::now());
                NewSession {
                    id,
                    nonce: challenge.nonce,
                }
            }
        };
        let challenge = serde_json::json!({"nonce": session.nonce, "extra-params": ""});
        Ok(AuthResponse {
            session,
            expires: SystemTime::now() + self.config.session_ttl,
            challenge,
        })
    }

    /// `POST /kbs/v0/attest`: verifies the evidence and returns an attestation token.
    ///
    /// The session's nonce is spent by the first attestation whose evidence verifies, allowed
    /// or denied; one refused before that leaves it usable until the session expires.
    pub fn attest(&self, session: Option<&SessionId>, body: &[u8]) -> Result<String, KbsError> {
        let session = session.ok_or(KbsError::MissingCookie)?;
        let raw: Value = serde_json::from_slice(body).map_err(KbsError::MalformedRequest)?;
        let attestation = Attestation::deserialize(&raw).map_err(KbsError::MalformedRequest)?;
        let document =
            init_data::parse(attestation.init_data.as_ref()).map_err(KbsError::InitData)?;
        let answered = self.challenge(session)?;
        let nonce = answered.nonce().to_owned();
        if attestation.runtime_data.nonce != nonce {
            return Err(KbsError::NonceMismatch);
        }
        jwe::check_tee_key(&attestation.runtime_data.tee_pubkey).map_err(KbsError::TeeKey)?;
        // Hash the key exactly as the client sent it (extra JWK members included).
        let raw_key = &raw["runtime-data"]["tee-pubkey"];
        let binding = BindingDigest::compute(
            &nonce,
            raw_key,
            &attestation.tee_evidence.additional_evidence,
        );
        let tee = answered.tee();
        let verifier = self
            .verifiers
            .get(tee)
            .ok_or_else(|| KbsError::UnsupportedTee {
                tee: tee.to_string(),
            })?;
        let now = SystemTime::now();
        let claims = verifier
            .verify(&attestation.tee_evidence.primary_evidence, &binding, now)
            .map_err(KbsError::Evidence)?;
        let expected_report_data = if claims.report_data.len() == REPORT_DATA_LEN * 2 {
            hex::encode(binding.padded())
        } else {
            hex::encode(binding.as_bytes())
        };
        // Only a document whose digest the verified evidence carries is taken.
        let init_data = document
            .as_ref()
            .map(|document| init_data::check(document, &claims))
            .transpose()
            .map_err(KbsError::InitData)?;
        let (init_data, init_data_claims) = match init_data {
            Some(verified) => (Some(verified.digest), Some(verified.data)),
            None => (None, None),
        };
        let claims_json = serde_json::to_value(&claims).map_err(KbsError::MalformedRequest)?;
        let simulated = claims.simulated || self.verifiers.trust().is_insecure();
        let verified = Verified {
            input: serde_json::json!({
                "claims": claims_json,
                "expected_report_data": expected_report_data,
                "init_data": init_data,
                "init_data_claims": init_data_claims,
            }),
            attested: Attested {
                tee: claims.tee.clone(),
                claims: claims_json,
                debug: claims.debug,
                simulated,
                init_data,
                init_data_claims,
                report_data: claims.report_data.clone(),
                tee_pubkey: raw_key.clone(),
                nonce,
            },
            iat: unix(now),
        };
        let appraisal = self.spend(session, answered, &verified)?;
        match appraisal {
            Appraisal::Allowed { token, .. } => {
                tracing::info!(tee = %claims.tee, simulated, measurement = %claims.measurement, "attestation affirmed");
                Ok(token)
            }
            Appraisal::Denied(reasons) => Err(KbsError::AttestationDenied { reasons }),
        }
    }

    /// Appraises verified evidence and spends the challenge it answered, recording the outcome:
    /// the attested claims, or a spent nonce when the policy denied. Fails without recording
    /// anything when another attestation spent it first or it expired.
    fn spend(
        &self,
        session: &SessionId,
        answered: Answered,
        verified: &Verified,
    ) -> Result<Appraisal, KbsError> {
        match (&self.exchange, answered) {
            (Exchange::Memory(sessions), Answered::Memory { .. }) => {
                let generation = self.store.generation().map_err(KbsError::Store)?;
                let loaded = self.current(generation)?;
                let appraisal = self.appraise(&loaded, verified)?;
                sessions
                    .settle(session, appraisal.claims().cloned(), Instant::now())
                    .map_err(KbsError::Session)?;
                Ok(appraisal)
            }
            // Appraised under what this replica has loaded; the statement that spends the nonce
            // records the outcome only if that is still current, else it gives the current
            // generation to appraise under again.
            #[cfg(feature = "postgres")]
            (Exchange::Shared(db), Answered::Shared(challenge)) => {
                let mut loaded = Arc::clone(&self.read_loaded());
                for _ in 0..MAX_APPRAISALS {
                    let appraisal = self.appraise(&loaded, verified)?;
                    // A shared store's generation is always known (it starts at 1).
                    let generation = loaded.generation.unwrap_or(0);
                    match db
                        .spend_challenge(&challenge, appraisal.claims(), generation)
                        .map_err(KbsError::Store)?
                    {
                        Spent::Recorded => return Ok(appraisal),
                        Spent::Refused(refusal) => return Err(KbsError::Session(refusal)),
                        Spent::Moved(current) => loaded = self.current(Some(current))?,
                    }
                }
                Err(KbsError::PoliciesChanging {
                    appraisals: MAX_APPRAISALS,
                })
            }
            #[cfg(feature = "postgres")]
            _ => Err(KbsError::Session(SessionError::NotFound)),
        }
    }

    /// The challenge `session` stands for: its TEE and nonce, read without spending it.
    fn challenge(&self, session: &SessionId) -> Result<Answered, KbsError> {
        match &self.exchange {
            Exchange::Memory(sessions) => {
                let (tee, nonce) = sessions
                    .challenge(session, Instant::now())
                    .map_err(KbsError::Session)?;
                Ok(Answered::Memory { tee, nonce })
            }
            #[cfg(feature = "postgres")]
            Exchange::Shared(db) => db
                .challenges()
                .open(session, SystemTime::now())
                .map(Answered::Shared)
                .map_err(KbsError::Session),
        }
    }

    /// The attestation policy's decision on verified evidence under `loaded`, and, when it
    /// allows, the token signed with `loaded`'s key.
    fn appraise(&self, loaded: &Loaded, verified: &Verified) -> Result<Appraisal, KbsError> {
        let decision = loaded
            .policies
            .attestation
            .evaluate(verified.input.clone())
            .map_err(KbsError::PolicyEval)?;
        if let Decision::Deny(reasons) = decision {
            return Ok(Appraisal::Denied(reasons));
        }
        let claims = TokenClaims::new(
            verified.attested.clone(),
            verified.iat,
            self.config.token_ttl.as_secs(),
        );
        let token = loaded.signer.issue(&claims).map_err(KbsError::Issue)?;
        // A token this broker would refuse as a bearer token is not issued.
        if token.len() > token::MAX_TOKEN_LEN {
            return Err(KbsError::TokenTooLarge {
                len: token.len(),
                max: token::MAX_TOKEN_LEN,
            });
        }
        Ok(Appraisal::Allowed { claims, token })
    }

    /// `GET /kbs/v0/resource/{repo}/{type}/{tag}`, authorised by an attested session or a bearer
    /// token (`authorization` is the whole `Authorization` header value).
    pub fn resource(
        &self,
        session: Option<&SessionId>,
        authorization: Option<&str>,
        path: &ResourcePath,
    ) -> Result<FlattenedJwe, KbsError> {
        // With a database, the session (or generation) and the sealed resource are read in one
        // statement: the policy applied is the one current when the resource was read.
        let (claims, loaded, prefetched) = match (authorization, session) {
            (Some(header), _) => {
                let token = header
                    .strip_prefix("Bearer ")
                    .ok_or(KbsError::TokenNotFound)?
                    .trim();
                let (generation, prefetched) = self.generation_and_resource(path)?;
                let loaded = self.current(generation)?;
                let claims = loaded
                    .signer
                    .verify(token, unix(SystemTime::now()))
                    .map_err(KbsError::Token)?;
                (claims, loaded, prefetched)
            }
            (None, Some(session)) => {
                let (attested, generation, prefetched) = self.attested_session(session, path)?;
                let claims = attested.map_err(|_| KbsError::TokenNotFound)?;
                (claims, self.current(generation)?, prefetched)
            }
            (None, None) => return Err(KbsError::TokenNotFound),
        };
        // Trustee's resource-policy input: the token's claims as `input`, the request in `data`.
        let input = serde_json::to_value(&claims).map_err(KbsError::MalformedRequest)?;
        let request = ResourceRequest {
            path,
            insecure_release_to_simulated: self.config.insecure_release_to_simulated,
        };
        let decision = loaded
            .policies
            .resource
            .evaluate_resource(input, &request)
            .map_err(KbsError::PolicyEval)?;
        if let Decision::Deny(reasons) = decision {
            return Err(KbsError::PolicyDeny { reasons });
        }
        let bytes = match prefetched {
            Prefetched::No => self.store.resource(path),
            #[cfg(feature = "postgres")]
            Prefetched::Sealed(None) => Ok(None),
            #[cfg(feature = "postgres")]
            Prefetched::Sealed(Some(sealed)) => match &self.exchange {
                Exchange::Shared(db) => db.open_resource(path, &sealed).map(Some),
                Exchange::Memory(_) => self.store.resource(path),
            },
        }
        .map_err(KbsError::Store)?
        .ok_or(KbsError::ResourceNotFound)?;
        let key = TeePubKey::deserialize(claims.tee_pubkey().unwrap_or(&Value::Null))
            .map_err(KbsError::MalformedRequest)?;
        let jwe = jwe::encrypt(&key, &bytes).map_err(KbsError::Encrypt)?;
        tracing::info!(resource = %path, tee = %claims.tee(), "resource released");
        Ok(jwe)
    }

    /// The claims of an attested session (or why not), with the store generation and, from a
    /// database, the sealed resource.
    #[cfg_attr(
        not(feature = "postgres"),
        expect(unused_variables, reason = "only a database reads the resource ahead")
    )]
    fn attested_session(
        &self,
        session: &SessionId,
        path: &ResourcePath,
    ) -> Result<(SessionClaims, Option<i64>, Prefetched), KbsError> {
        match &self.exchange {
            Exchange::Memory(sessions) => Ok((
                sessions.attested(session, Instant::now()),
                self.store.generation().map_err(KbsError::Store)?,
                Prefetched::No,
            )),
            #[cfg(feature = "postgres")]
            Exchange::Shared(db) => match db.challenges().open(session, SystemTime::now()) {
                Ok(challenge) => {
                    let (attested, generation, sealed) =
                        db.attested(&challenge, path).map_err(KbsError::Store)?;
                    Ok((attested, Some(generation), Prefetched::Sealed(sealed)))
                }
                // Not a cookie of ours, or expired: no round trip.
                Err(refusal) => Ok((Err(refusal), None, Prefetched::No)),
            },
        }
    }

    /// The store generation and, from a database, the sealed resource.
    #[cfg_attr(
        not(feature = "postgres"),
        expect(unused_variables, reason = "only a database reads the resource ahead")
    )]
    fn generation_and_resource(
        &self,
        path: &ResourcePath,
    ) -> Result<(Option<i64>, Prefetched), KbsError> {
        match &self.exchange {
            Exchange::Memory(_) => Ok((
                self.store.generation().map_err(KbsError::Store)?,
                Prefetched::No,
            )),
            #[cfg(feature = "postgres")]
            Exchange::Shared(db) => {
                let (generation, sealed) =
                    db.generation_and_resource(path).map_err(KbsError::Store)?;
                Ok((Some(generation), Prefetched::Sealed(sealed)))
            }
        }
    }

    /// Checks an admin request's `Authorization` header. A token is accepted once: by this
    /// process, or by all replicas of a shared store.
    pub fn check_admin(&self, authorization: Option<&str>) -> Result<(), KbsError> {
        let now = unix(SystemTime::now());
        match &self.exchange {
            Exchange::Memory(_) => self
                .config
                .admin
                .check(authorization, now)
                .map_err(KbsError::AdminAuth),
            #[cfg(feature = "postgres")]
            Exchange::Shared(db) => {
                let (id, exp) = self
                    .config
                    .admin
                    .verify(authorization, now)
                    .map_err(KbsError::AdminAuth)?;
                if self.config.admin.token_use() == crate::admin::TokenUse::UntilExpiry
                    || db.remember_admin_token(id, exp).map_err(KbsError::Store)?
                {
                    Ok(())
                } else {
                    Err(KbsError::AdminAuth(crate::AdminAuthError::Replayed))
                }
            }
        }
    }

    /// Stores a resource (admin).
    pub fn set_resource(&self, path: &ResourcePath, bytes: &[u8]) -> Result<(), KbsError> {
        self.store
            .set_resource(path, bytes)
            .map_err(KbsError::Store)?;
        tracing::info!(resource = %path, "resource stored");
        Ok(())
    }

    /// Deletes a resource (admin); 404 when there is none.
    pub fn delete_resource(&self, path: &ResourcePath) -> Result<(), KbsError> {
        if !self.store.delete_resource(path).map_err(KbsError::Store)? {
            return Err(KbsError::ResourceNotFound);
        }
        tracing::info!(resource = %path, "resource deleted");
        Ok(())
    }

    /// Lists resource paths (admin).
    pub fn list_resources(&self) -> Result<Vec<String>, KbsError> {
        let paths = self.store.list_resources().map_err(KbsError::Store)?;
        Ok(paths.iter().map(ToString::to_string).collect())
    }

    /// The policy text this replica has loaded.
    pub fn policy(&self, kind: PolicyKind) -> String {
        let loaded = self.read_loaded();
        match kind {
            PolicyKind::Attestation => loaded.policies.attestation.text().to_owned(),
            PolicyKind::Resource => loaded.policies.resource.text().to_owned(),
        }
    }

    /// The current policy text (admin): of a shared store, as it is now.
    pub fn current_policy(&self, kind: PolicyKind) -> Result<String, KbsError> {
        let loaded = self.current_now()?;
        Ok(match kind {
            PolicyKind::Attestation => loaded.policies.attestation.text().to_owned(),
            PolicyKind::Resource => loaded.policies.resource.text().to_owned(),
        })
    }

    /// Replaces a policy (admin). The policy is compiled before it is stored.
    pub fn set_policy(&self, kind: PolicyKind, text: &str) -> Result<(), KbsError> {
        let _guard = self.lock_admin();
        let refs = self.store.reference_values().map_err(KbsError::Store)?;
        Policy::compile(text, &refs)
            .and_then(|policy| policy.check_decides(kind))
            .map_err(KbsError::InvalidPolicy)?;
        self.store.set_policy(kind, text).map_err(KbsError::Store)?;
        self.reload_after_change()?;
        tracing::info!(?kind, "policy replaced");
        Ok(())
    }

    /// Forgets a policy (admin): the built-in default applies again.
    pub fn delete_policy(&self, kind: PolicyKind) -> Result<(), KbsError> {
        let _guard = self.lock_admin();
        self.store.delete_policy(kind).map_err(KbsError::Store)?;
        self.reload_after_change()?;
        tracing::info!(?kind, "policy reset to the default");
        Ok(())
    }

    /// The reference values (admin).
    pub fn reference_values(&self) -> Result<BTreeMap<String, Vec<String>>, KbsError> {
        self.store.reference_values().map_err(KbsError::Store)
    }

    /// Replaces the reference values (admin) and recompiles the policies over them.
    pub fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), KbsError> {
        let _guard = self.lock_admin();
        self.store_reference_values(values)?;
        tracing::info!(names = values.len(), "reference values replaced");
        Ok(())
    }

    /// Sets some reference values (admin), each name replacing its values and leaving the
    /// others: what Trustee's reference value provider does with a `sample` message. On a
    /// shared store, the read and the write are not one transaction: two such updates through
    /// different replicas at the same moment may lose one (docs/kbs-operations.md).
    pub fn merge_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), KbsError> {
        let _guard = self.lock_admin();
        let mut merged = self.store.reference_values().map_err(KbsError::Store)?;
        merged.extend(
            values
                .iter()
                .map(|(name, list)| (name.clone(), list.clone())),
        );
        self.store_reference_values(&merged)?;
        tracing::info!(names = values.len(), "reference values set");
        Ok(())
    }

    /// Serialises admin changes; held from reading the store to reloading after the write.
    fn lock_admin(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admin_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the whole reference-value table and recompiles the policies over it; the caller
    /// holds [`Self::lock_admin`].
    fn store_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), KbsError> {
        self.store
            .set_reference_values(values)
            .map_err(KbsError::Store)?;
        self.reload_after_change()
    }

    fn read_loaded(&self) -> std::sync::RwLockReadGuard<'_, Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_loaded(&self) -> std::sync::RwLockWriteGuard<'_, Arc<Loaded>> {
        self.loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The broker's trust mode: which insecure options are on. The token signing key belongs to one
/// mode, so that tokens minted under simulation die with it.
fn trust_mode(verifiers: &VerifierSet, config: &BrokerConfig) -> String {
    let mut options = verifiers.insecure_options();
    if config.insecure_release_to_simulated {
        options.push("release-to-simulated");
    }
    if options.is_empty() {
        "secure".into()
    } else {
        format!("insecure:{}", options.join(","))
    }
}

/// Makes sure the store holds a token signing key made in `mode`: keeps the stored one if so,
/// otherwise stores a new key with `mode`, so that every token issued in another trust mode is
/// refused from now on.
fn ensure_token_key(store: &dyn StateStore, mode: &str) -> Result<(), KbsError> {
    let stored = store.token_key().map_err(KbsError::Store)?;
    match &stored {
        Some((_, stored_mode)) if stored_mode == mode => return Ok(()),
        Some((_, stored_mode)) => tracing::warn!(
            from = stored_mode.as_str(),
            to = mode,
            "trust mode changed: new token signing key, tokens issued before are no longer accepted"
        ),
        None => {}
    }
    let signer = TokenSigner::generate().map_err(KbsError::Issue)?;
    let pem = signer.to_pkcs8_pem().map_err(KbsError::Issue)?;
    store.set_token_key(&pem, mode).map_err(KbsError::Store)
}

/// Replaces the stored token signing key with a new one of the same trust mode (`tsuba kbs
/// rotate-token-key`). Replicas on a shared store pick it up with their next request; tokens
/// signed with the old key are refused from then on, and clients attest again.
pub fn rotate_token_key(store: &dyn StateStore) -> Result<(), KbsError> {
    let Some((_, mode)) = store.token_key().map_err(KbsError::Store)? else {
        return Err(KbsError::Store(StoreError::Malformed {
            what: "token key (missing: start a broker on this store first)".into(),
        }));
    };
    let signer = TokenSigner::generate().map_err(KbsError::Issue)?;
    let pem = signer.to_pkcs8_pem().map_err(KbsError::Issue)?;
    store.set_token_key(&pem, &mode).map_err(KbsError::Store)
}

/// Reads policies and the token key (which must belong to `mode`) from the store.
fn load(store: &dyn StateStore, mode: &str, generation: Option<i64>) -> Result<Loaded, KbsError> {
    let signer = match store.token_key().map_err(KbsError::Store)? {
        Some((pem, stored)) if stored == mode => {
            TokenSigner::from_pkcs8_pem(&pem).map_err(KbsError::Issue)?
        }
        Some((_, stored)) => {
            return Err(KbsError::Store(StoreError::TrustModeMismatch {
                stored,
                ours: mode.into(),
            }));
        }
        None => {
            return Err(KbsError::Store(StoreError::Malformed {
                what: "token key (missing)".into(),
            }));
        }
    };
    Ok(Loaded {
        generation,
        policies: load_policies(store)?,
        signer,
    })
}

fn load_policies(store: &dyn StateStore) -> Result<Policies, KbsError> {
    let refs = store.reference_values().map_err(KbsError::Store)?;
    let attestation = store
        .policy(PolicyKind::Attestation)
        .map_err(KbsError::Store)?;
    let resource = store
        .policy(PolicyKind::Resource)
        .map_err(KbsError::Store)?;
    let compile = |text: Option<String>, default: &str| {
        Policy::compile(text.as_deref().unwrap_or(default), &refs).map_err(KbsError::PolicyEval)
    };
    Ok(Policies {
        attestation: compile(attestation, policy::DEFAULT_ATTESTATION_POLICY)?,
        resource: compile(resource, policy::DEFAULT_RESOURCE_POLICY)?,
    })
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Decodes a base64url (no padding) policy upload.
pub(crate) fn decode_policy_upload(encoded: &str) -> Result<String, KbsError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .map_err(|_| {
            KbsError::InvalidPolicy(policy::PolicyError::Compile(
                "policy is not base64url".into(),
            ))
        })?;
    String::from_utf8(bytes).map_err(|_| {
        KbsError::InvalidPolicy(policy::PolicyError::Compile("policy is not utf-8".into()))
    })
}
