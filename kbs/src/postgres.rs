//! The PostgreSQL backend (feature `postgres`): one database shared by any number of broker
//! replicas.
//!
//! It holds what the folder holds (resources and the token key sealed under the operator's
//! at-rest key, policies, reference values) and what a lone broker keeps in memory: the attested
//! sessions, and the admin tokens already used. So any step of the exchange can land on any
//! replica. Challenges are not stored: `auth` hands out a tagged cookie (`crate::challenge`) that
//! every replica can check, and the first verified attestation records its id with one
//! `INSERT … ON CONFLICT DO NOTHING`, so a nonce is spent once across all replicas. An admin
//! token is accepted once the same way.
//!
//! Every change of policies, reference values or the token key bumps a generation number in the
//! same statement; each replica reads it with every attest and resource request and reloads
//! when it moved, so a change made through one replica applies to the next request on any.
//!
//! The schema is versioned: migrations run at start under an advisory lock, and a broker refuses
//! a database whose schema is newer than it knows. Every statement is bounded in time; a
//! database that cannot be reached makes requests fail with [`StoreError::Unavailable`] (503),
//! and the connection is made again on the next request once the database is back.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use crate::at_rest::AtRestKeys;
use crate::broker::PolicyKind;
use crate::challenge::{Challenge, ChallengeKeys};
use crate::session::SessionError;
use crate::store::{MAX_RESOURCE_LEN, ResourcePath, StateStore, StoreError};
use crate::token::TokenClaims;

/// The newest schema this broker knows.
pub const SCHEMA_VERSION: i32 = 2;

/// Migrations: entry `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE tsuba_kbs_meta (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation bigint NOT NULL
);
INSERT INTO tsuba_kbs_meta (id, generation) VALUES (true, 1);
CREATE TABLE tsuba_kbs_settings (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
CREATE TABLE tsuba_kbs_resources (
    path text PRIMARY KEY,
    sealed bytea NOT NULL
);
CREATE TABLE tsuba_kbs_sessions (
    id text PRIMARY KEY,
    tee text NOT NULL,
    nonce text NOT NULL,
    client text,
    state smallint NOT NULL,
    claims text,
    expires timestamptz NOT NULL
);
CREATE INDEX tsuba_kbs_sessions_challenged ON tsuba_kbs_sessions (client) WHERE state = 0;
CREATE INDEX tsuba_kbs_sessions_expires ON tsuba_kbs_sessions (expires);
CREATE TABLE tsuba_kbs_admin_tokens (
    id bytea PRIMARY KEY,
    expires bigint NOT NULL
);
",
    r"
-- Version 2: sessions are created by one function that bounds them per client (exactly: the
-- client's count and the insert happen under an advisory lock on the client) and in total
-- (the count of every session waiting for attestation, without a lock: concurrent creates can
-- pass it by at most their number). Returns 0 (created), 1 (client limit) or 2 (full).
CREATE FUNCTION tsuba_kbs_create_session(
    p_id text, p_tee text, p_nonce text, p_client text, p_ttl_ms double precision,
    p_max_per_client bigint, p_max_total bigint
) RETURNS smallint LANGUAGE plpgsql AS $$
BEGIN
    IF p_client IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(29811, hashtext(p_client));
        IF (SELECT count(*) FROM tsuba_kbs_sessions
            WHERE client = p_client AND state = 0 AND expires > now()) >= p_max_per_client THEN
            RETURN 1;
        END IF;
    END IF;
    IF (SELECT count(*) FROM tsuba_kbs_sessions
        WHERE state = 0 AND expires > now()) >= p_max_total THEN
        RETURN 2;
    END IF;
    INSERT INTO tsuba_kbs_sessions (id, tee, nonce, client, state, expires)
        VALUES (p_id, p_tee, p_nonce, p_client, 0, now() + p_ttl_ms * interval '1 millisecond');
    RETURN 0;
END
$$;
",
];

/// Key of the advisory lock held while migrating (`tsuba` in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_7375_6261;

/// Longest time one store operation (connecting included) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections kept open per replica; statements are pipelined on each.
const CONNECTIONS: usize = 4;

/// How often expired sessions and admin tokens are deleted.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Session states: 1 nonce spent by an attestation the policy denied, 2 attested. (0,
/// challenged, was written by brokers that stored challenges; rows are only written now once
/// evidence has verified.)
const SPENT: i16 = 1;
const ATTESTED: i16 = 2;

const TOKEN_KEY: &str = "token-key";
const TOKEN_MODE: &str = "token-mode";
const REFERENCE_VALUES: &str = "reference-values";

/// What became of a challenge's spending.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Spent {
    /// Recorded: the outcome stands.
    Recorded,
    /// Not recorded: policies, reference values or the token key changed; this is the current
    /// generation, to appraise under again.
    Moved(i64),
    /// Not recorded, and never will be: spent already, or expired.
    Refused(SessionError),
}

/// A session's claims (or why not), the generation and a sealed resource, read together.
pub(crate) type AttestedRead = (Result<TokenClaims, SessionError>, i64, Option<Vec<u8>>);

/// How to reach the database.
#[derive(Debug)]
pub struct PgOptions {
    /// `postgres://user@host:port/db?sslmode=require` (libpq URL or key=value form). A host
    /// other than loopback or a Unix socket needs `sslmode=require`.
    pub url: String,
    /// CA certificates (PEM) that the database server's certificate must chain to; needed for
    /// `sslmode=require`.
    pub ca_pem: Option<Vec<u8>>,
    /// The at-rest keys that seal resources and the token key.
    pub keys: AtRestKeys,
}

struct Inner {
    config: Config,
    tls: MakeRustlsConnect,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
    keys: AtRestKeys,
    /// Whether the last statement reached the database.
    reachable: AtomicBool,
}

/// The broker's state in PostgreSQL.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    inner: Arc<Inner>,
    /// Tag and check the challenge cookies, which the database does not hold.
    challenges: ChallengeKeys,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn unavailable(reason: impl Into<String>) -> StoreError {
    StoreError::Unavailable {
        reason: reason.into(),
    }
}

/// A statement error: a refusal of the statement by the server is a database error; anything
/// else (connection lost, refused, closed, the server shutting down) means the database is
/// unavailable.
fn db_error(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        // Connection exceptions (08), too little memory or too many connections (53), and the
        // server shutting down or restarting (57): the database is unavailable, not refusing
        // the statement.
        let class = db.code().code().get(..2).unwrap_or("");
        if matches!(class, "08" | "53" | "57") {
            return unavailable(format!("{}: {}", db.severity(), db.message()));
        }
        StoreError::Database(err)
    } else {
        // The chain of causes says what went wrong (refused, TLS certificate, ...); it holds no
        // credentials.
        let mut reason = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !reason.ends_with(&text) {
                reason.push_str(": ");
                reason.push_str(&text);
            }
            source = cause.source();
        }
        unavailable(reason)
    }
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

fn tls_connector(ca_pem: Option<&[u8]>) -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|_| {
                StoreError::DatabaseConfig("the database CA file is not valid PEM".into())
            })?;
            roots.add(cert).map_err(|_| {
                StoreError::DatabaseConfig(
                    "the database CA file holds a certificate rustls refuses".into(),
                )
            })?;
        }
        if roots.is_empty() {
            return Err(StoreError::DatabaseConfig(
                "the database CA file holds no certificate".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| StoreError::DatabaseConfig("tls protocol versions refused".into()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects, migrates the schema (refusing one newer than [`SCHEMA_VERSION`]) and starts
    /// sweeping expired sessions. Fails if the database cannot be reached within `wait`.
    pub fn connect(options: PgOptions, wait: Duration) -> Result<Self, StoreError> {
        let mut config: Config = options.url.parse().map_err(|_| {
            StoreError::DatabaseConfig(
                "the database url is not a postgres:// url or key=value string".into(),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(OPERATION_TIMEOUT);
        }
        let ssl = config.get_ssl_mode();
        if ssl != SslMode::Require && !config.get_hosts().iter().all(is_local) {
            return Err(StoreError::DatabaseConfig(
                "a database on another machine needs sslmode=require (and --database-ca): \
                 credentials and secrets would cross the network in clear"
                    .into(),
            ));
        }
        if ssl == SslMode::Require && options.ca_pem.is_none() {
            return Err(StoreError::DatabaseConfig(
                "sslmode=require needs the CA of the database's certificate (--database-ca)".into(),
            ));
        }
        let tls = tls_connector(options.ca_pem.as_deref())?;
        let challenges = options.keys.challenge_keys();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kbs-postgres")
            .enable_all()
            .build()
            .map_err(|err| unavailable(format!("cannot start the database runtime: {err}")))?;
        let inner = Arc::new(Inner {
            config,
            tls,
            slots: (0..CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            keys: options.keys,
            reachable: AtomicBool::new(true),
        });
        let store = Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            inner,
            challenges,
        };
        store.block_on_bounded(wait, {
            let inner = Arc::clone(&store.inner);
            async move { inner.migrate(wait).await }
        })?;
        store.handle.spawn(sweep(Arc::downgrade(&store.inner)));
        tracing::info!(schema = SCHEMA_VERSION, at_rest_key = %store.inner.keys.current_id(), "state database ready");
        Ok(store)
    }

    /// Runs `future` on the store's runtime and waits for it at most `limit`.
    fn block_on_bounded<T: Send + 'static>(
        &self,
        limit: Duration,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = tokio::time::timeout(limit, future)
                .await
                .unwrap_or_else(|_| {
                    Err(unavailable(format!(
                        "no answer within {} s",
                        limit.as_secs_f32()
                    )))
                });
            let _ = tx.send(result);
        });
        rx.recv_timeout(limit.saturating_add(Duration::from_secs(1)))
            .unwrap_or_else(|_| Err(unavailable("the database runtime did not answer")))
    }

    /// Runs one operation with a pooled connection, bounded by [`OPERATION_TIMEOUT`].
    fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>, Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let inner = Arc::clone(&self.inner);
        let result = self.block_on_bounded(OPERATION_TIMEOUT, async move {
            let client = inner.client().await?;
            op(client, inner).await
        });
        match &result {
            Ok(_) => self.inner.reachable.store(true, Ordering::Relaxed),
            Err(StoreError::Unavailable { .. }) => {
                self.inner.reachable.store(false, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result
    }

    /// Fails when the database is known to be unreachable: the last statement found it so and
    /// none has reached it since. Costs no round trip while it answers; while it does not, each
    /// call tries it again, so the first call after it is back succeeds.
    pub(crate) fn check_reachable(&self) -> Result<(), StoreError> {
        if self.inner.reachable.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.generation().map(|_| ())
    }

    fn setting(&self, name: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(move |client, _| async move {
            let row = client
                .query_opt(
                    "SELECT value FROM tsuba_kbs_settings WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
        })
    }

    /// Stores settings and bumps the generation, in one statement.
    fn set_settings(&self, values: Vec<(&'static str, Vec<u8>)>) -> Result<(), StoreError> {
        self.run(move |client, _| async move {
            let names: Vec<&str> = values.iter().map(|(name, _)| *name).collect();
            let bytes: Vec<&[u8]> = values.iter().map(|(_, value)| value.as_slice()).collect();
            client
                .execute(
                    "WITH bump AS (UPDATE tsuba_kbs_meta SET generation = generation + 1) \
                     INSERT INTO tsuba_kbs_settings (name, value) \
                     SELECT * FROM unnest($1::text[], $2::bytea[]) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    &[&names, &bytes],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn text_setting(&self, name: &'static str) -> Result<Option<String>, StoreError> {
        self.setting(name)?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| StoreError::Malformed { what: name.into() })
            })
            .transpose()
    }

    /// Re-seals every resource and the token key under the current at-rest key (after a key
    /// rotation, with the old key given as a previous key). Returns how many values changed.
    pub fn reseal(&self) -> Result<usize, StoreError> {
        let mut changed = 0;
        for path in self.list_resources()? {
            let what = resource_name(&path);
            let name = path.to_string();
            let sealed = self.run(move |client, _| async move {
                let row = client
                    .query_opt(
                        "SELECT sealed FROM tsuba_kbs_resources WHERE path = $1",
                        &[&name],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
            })?;
            if let Some(sealed) = sealed
                && !self.inner.keys.is_current(&sealed)
            {
                let plain = self.inner.keys.open(&what, &sealed)?;
                self.set_resource(&path, &plain)?;
                changed += 1;
            }
        }
        if let Some(sealed) = self.setting(TOKEN_KEY)?
            && !self.inner.keys.is_current(&sealed)
            && let Some((pem, mode)) = self.token_key()?
        {
            self.set_token_key(&pem, &mode)?;
            changed += 1;
        }
        Ok(changed)
    }

    // ---- the exchange: sessions and admin tokens, shared by the replicas ----

    /// The keys of the challenge cookies that stand in for challenged sessions.
    pub(crate) fn challenges(&self) -> &ChallengeKeys {
        &self.challenges
    }

    /// Spends `challenge`'s nonce for an attestation whose evidence verified and was appraised
    /// under the policies of `generation`: records the session attested with `claims`, or spent
    /// when the policy denied it (`None`). One `INSERT … ON CONFLICT DO NOTHING`, checked against
    /// the database's clock and generation, so across every replica only the first attestation
    /// of a challenge is recorded, none after its expiry, and none appraised under policies that
    /// are no longer current.
    pub(crate) fn spend_challenge(
        &self,
        challenge: &Challenge,
        claims: Option<&TokenClaims>,
        generation: i64,
    ) -> Result<Spent, StoreError> {
        let id = challenge.id.clone();
        let tee = challenge.tee.to_string();
        let nonce = challenge.nonce.clone();
        let expires_ms = challenge.expires_ms;
        let (state, claims) = session_row(claims)?;
        self.run(move |db, _| async move {
            let row = db
                .query_one(
                    "WITH meta AS (SELECT generation FROM tsuba_kbs_meta), \
                     spent AS ( \
                         INSERT INTO tsuba_kbs_sessions (id, tee, nonce, state, claims, expires) \
                         SELECT $1, $2, $3, $4, $5, to_timestamp($6::bigint / 1000.0) FROM meta \
                         WHERE meta.generation = $7 \
                             AND to_timestamp($6::bigint / 1000.0) > now() \
                         ON CONFLICT (id) DO NOTHING RETURNING 1) \
                     SELECT meta.generation, EXISTS (SELECT 1 FROM spent), \
                         to_timestamp($6::bigint / 1000.0) > now() \
                     FROM meta",
                    &[&id, &tee, &nonce, &state, &claims, &expires_ms, &generation],
                )
                .await
                .map_err(db_error)?;
            let current: i64 = row.get(0);
            let recorded: bool = row.get(1);
            let live: bool = row.get(2);
            Ok(if recorded {
                Spent::Recorded
            } else if current != generation {
                Spent::Moved(current)
            } else if live {
                Spent::Refused(SessionError::NonceUsed)
            } else {
                Spent::Refused(SessionError::Expired)
            })
        })
    }

    /// The claims of an attested, live session (or why not), the current generation and, in
    /// the same statement, the sealed resource at `path` (opened only once the policy allowed
    /// it, with [`PgStore::open_resource`]).
    pub(crate) fn attested(
        &self,
        challenge: &Challenge,
        path: &ResourcePath,
    ) -> Result<AttestedRead, StoreError> {
        let id = challenge.id.clone();
        let path = path.to_string();
        self.run(move |db, _| async move {
            let row = db
                .query_one(
                    "SELECT s.state, s.claims, s.expires > now(), m.generation, r.sealed \
                     FROM tsuba_kbs_meta m LEFT JOIN tsuba_kbs_sessions s ON s.id = $1 \
                     LEFT JOIN tsuba_kbs_resources r ON r.path = $2",
                    &[&id, &path],
                )
                .await
                .map_err(db_error)?;
            let state: Option<i16> = row.get(0);
            let claims: Option<String> = row.get(1);
            let live: Option<bool> = row.get(2);
            let generation: i64 = row.get(3);
            let sealed: Option<Vec<u8>> = row.get(4);
            let result = match (state, live, claims) {
                (None, _, _) => Err(SessionError::NotFound),
                (Some(_), Some(false) | None, _) => Err(SessionError::Expired),
                (Some(ATTESTED), Some(true), Some(claims)) => Ok(serde_json::from_str(&claims)
                    .map_err(|_| StoreError::Malformed {
                        what: "session claims".into(),
                    })?),
                _ => Err(SessionError::NotAttested),
            };
            Ok((result, generation, sealed))
        })
    }

    /// The current generation and, in the same statement, the sealed resource at `path`.
    pub(crate) fn generation_and_resource(
        &self,
        path: &ResourcePath,
    ) -> Result<(i64, Option<Vec<u8>>), StoreError> {
        let path = path.to_string();
        self.run(move |db, _| async move {
            let row = db
                .query_one(
                    "SELECT m.generation, r.sealed FROM tsuba_kbs_meta m \
                     LEFT JOIN tsuba_kbs_resources r ON r.path = $1",
                    &[&path],
                )
                .await
                .map_err(db_error)?;
            Ok((row.get(0), row.get(1)))
        })
    }

    /// Opens a sealed resource read by [`PgStore::attested`] or
    /// [`PgStore::generation_and_resource`].
    pub(crate) fn open_resource(
        &self,
        path: &ResourcePath,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.inner.keys.open(&resource_name(path), sealed)
    }

    /// Remembers an admin token until `exp`; false if it was already remembered (a replay,
    /// through any replica).
    pub(crate) fn remember_admin_token(&self, id: [u8; 32], exp: u64) -> Result<bool, StoreError> {
        let exp = i64::try_from(exp).unwrap_or(i64::MAX);
        self.run(move |db, _| async move {
            let inserted = db
                .execute(
                    "INSERT INTO tsuba_kbs_admin_tokens (id, expires) VALUES ($1, $2) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&&id[..], &exp],
                )
                .await
                .map_err(db_error)?;
            Ok(inserted == 1)
        })
    }
}

/// A session row's state and claims for an attestation allowed with `claims`, or denied.
fn session_row(claims: Option<&TokenClaims>) -> Result<(i16, Option<String>), StoreError> {
    match claims {
        None => Ok((SPENT, None)),
        Some(claims) => {
            let text = serde_json::to_string(claims).map_err(|_| StoreError::Malformed {
                what: "token claims".into(),
            })?;
            Ok((ATTESTED, Some(text)))
        }
    }
}

fn resource_name(path: &ResourcePath) -> String {
    format!("resource/{path}")
}

fn setting_name(name: &str) -> String {
    format!("setting/{name}")
}

fn policy_setting(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Attestation => "attestation-policy",
        PolicyKind::Resource => "resource-policy",
    }
}

impl Inner {
    /// A connected client from the pool, connecting (and checking the schema) if the slot's
    /// connection is gone.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        if let Some(client) = slot.as_ref()
            && !client.is_closed()
        {
            return Ok(Arc::clone(client));
        }
        *slot = None;
        let client = self.connect().await?;
        let row = client
            .query_opt("SELECT version FROM tsuba_kbs_schema", &[])
            .await
            .map_err(db_error)?;
        let version: i32 = row.map_or(0, |row| row.get(0));
        if version != SCHEMA_VERSION {
            return Err(unavailable(format!(
                "the database schema is version {version}, this broker needs {SCHEMA_VERSION}"
            )));
        }
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(db_error)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "state database connection lost");
            }
        });
        Ok(client)
    }

    /// Connects (retrying until `wait` is over) and brings the schema up to date.
    async fn migrate(&self, wait: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut client = loop {
            match self.connect().await {
                Ok(client) => break client,
                Err(err) if tokio::time::Instant::now() + Duration::from_millis(250) < deadline => {
                    tracing::info!(error = %err, "waiting for the state database");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS tsuba_kbs_schema (\
               id boolean PRIMARY KEY DEFAULT true CHECK (id), version integer NOT NULL)",
        )
        .await
        .map_err(db_error)?;
        let found: i32 = tx
            .query_opt("SELECT version FROM tsuba_kbs_schema", &[])
            .await
            .map_err(db_error)?
            .map_or(0, |row| row.get(0));
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        let start = usize::try_from(found).unwrap_or(0);
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
            tx.batch_execute(migration).await.map_err(db_error)?;
            tracing::info!(version = index + 1, "database schema migrated");
        }
        tx.execute(
            "INSERT INTO tsuba_kbs_schema (id, version) VALUES (true, $1) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }
}

/// Deletes expired sessions and admin tokens now and then, until the store is dropped.
async fn sweep(inner: std::sync::Weak<Inner>) {
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let result = tokio::time::timeout(OPERATION_TIMEOUT, async {
            let db = inner.client().await?;
            let now = i64::try_from(crate::broker::unix(std::time::SystemTime::now()))
                .unwrap_or(i64::MAX);
            // A minute's grace: a database clock stepped back a little does not make a spent
            // challenge (whose cookie is still within its expiry) spendable again.
            db.execute(
                "DELETE FROM tsuba_kbs_sessions WHERE expires < now() - interval '1 minute'",
                &[],
            )
            .await
            .map_err(db_error)?;
            db.execute(
                "DELETE FROM tsuba_kbs_admin_tokens WHERE expires < $1",
                &[&now],
            )
            .await
            .map_err(db_error)?;
            Ok::<_, StoreError>(())
        })
        .await;
        if let Ok(Err(err)) = result {
            tracing::debug!(error = %err, "sweeping expired sessions failed");
        }
    }
}

impl StateStore for PgStore {
    fn token_key(&self) -> Result<Option<(Zeroizing<String>, String)>, StoreError> {
        let Some(sealed) = self.setting(TOKEN_KEY)? else {
            return Ok(None);
        };
        let pem = self.inner.keys.open(&setting_name(TOKEN_KEY), &sealed)?;
        let pem = String::from_utf8(pem.to_vec()).map_err(|_| StoreError::Malformed {
            what: "token key".into(),
        })?;
        let mode = self
            .text_setting(TOKEN_MODE)?
            .unwrap_or_else(|| "unknown".into());
        Ok(Some((Zeroizing::new(pem), mode)))
    }

    fn set_token_key(&self, pem: &str, mode: &str) -> Result<(), StoreError> {
        let sealed = self
            .inner
            .keys
            .seal(&setting_name(TOKEN_KEY), pem.as_bytes())?;
        self.set_settings(vec![
            (TOKEN_KEY, sealed),
            (TOKEN_MODE, mode.as_bytes().to_vec()),
        ])
    }

    fn reference_values(&self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        match self.setting(REFERENCE_VALUES)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(StoreError::ReferenceValues),
            None => Ok(BTreeMap::new()),
        }
    }

    fn set_reference_values(
        &self,
        values: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(values).map_err(StoreError::ReferenceValues)?;
        self.set_settings(vec![(REFERENCE_VALUES, json)])
    }

    fn policy(&self, kind: PolicyKind) -> Result<Option<String>, StoreError> {
        self.text_setting(policy_setting(kind))
    }

    fn set_policy(&self, kind: PolicyKind, text: &str) -> Result<(), StoreError> {
        self.set_settings(vec![(policy_setting(kind), text.as_bytes().to_vec())])
    }

    fn delete_policy(&self, kind: PolicyKind) -> Result<(), StoreError> {
        let name = policy_setting(kind);
        self.run(move |client, _| async move {
            // The generation moves with it: every replica reloads on its next request.
            client
                .execute(
                    "WITH bump AS (UPDATE tsuba_kbs_meta SET generation = generation + 1) \
                     DELETE FROM tsuba_kbs_settings WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn resource(&self, path: &ResourcePath) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let name = path.to_string();
        let sealed = self.run(move |db, _| async move {
            let row = db
                .query_opt(
                    "SELECT sealed FROM tsuba_kbs_resources WHERE path = $1",
                    &[&name],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get::<_, Vec<u8>>(0)))
        })?;
        sealed
            .map(|sealed| self.inner.keys.open(&resource_name(path), &sealed))
            .transpose()
    }

    fn set_resource(&self, path: &ResourcePath, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() > MAX_RESOURCE_LEN {
            return Err(StoreError::ResourceTooLarge);
        }
        let sealed = self.inner.keys.seal(&resource_name(path), bytes)?;
        let name = path.to_string();
        self.run(move |db, _| async move {
            db.execute(
                "INSERT INTO tsuba_kbs_resources (path, sealed) VALUES ($1, $2) \
                 ON CONFLICT (path) DO UPDATE SET sealed = excluded.sealed",
                &[&name, &sealed],
            )
            .await
            .map_err(db_error)?;
            Ok(())
        })
    }

    fn delete_resource(&self, path: &ResourcePath) -> Result<bool, StoreError> {
        let name = path.to_string();
        self.run(move |db, _| async move {
            let deleted = db
                .execute("DELETE FROM tsuba_kbs_resources WHERE path = $1", &[&name])
                .await
                .map_err(db_error)?;
            Ok(deleted > 0)
        })
    }

    fn list_resources(&self) -> Result<Vec<ResourcePath>, StoreError> {
        let names = self.run(|db, _| async move {
            let rows = db
                .query("SELECT path FROM tsuba_kbs_resources ORDER BY path", &[])
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>())
        })?;
        let mut paths = names
            .iter()
            .map(|name| {
                ResourcePath::parse(name).map_err(|_| StoreError::Malformed {
                    what: "resource path".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        paths.sort_by_key(ToString::to_string);
        Ok(paths)
    }

    fn generation(&self) -> Result<Option<i64>, StoreError> {
        self.run(|db, _| async move {
            let row = db
                .query_one("SELECT generation FROM tsuba_kbs_meta", &[])
                .await
                .map_err(db_error)?;
            Ok(Some(row.get(0)))
        })
    }

    fn check_ready(&self) -> Result<(), StoreError> {
        // A pooled connection is only handed out after its schema version was checked; the
        // statement proves the connection still answers.
        self.generation().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AtRestKeys {
        AtRestKeys::from_hex(&"11".repeat(32), &[]).unwrap()
    }

    fn options(url: &str, ca: Option<&[u8]>) -> PgOptions {
        PgOptions {
            url: url.into(),
            ca_pem: ca.map(<[u8]>::to_vec),
            keys: keys(),
        }
    }

    fn config_error(url: &str, ca: Option<&[u8]>) -> String {
        match PgStore::connect(options(url, ca), Duration::from_millis(100)) {
            Err(StoreError::DatabaseConfig(reason)) => reason,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_remote_database_needs_tls_with_a_ca() {
        assert!(
            config_error("postgres://kbs@db.example/kbs", None)
                .starts_with("a database on another machine needs sslmode=require")
        );
        assert!(
            config_error("postgres://kbs@db.example/kbs?sslmode=prefer", None)
                .starts_with("a database on another machine needs sslmode=require")
        );
        assert!(
            config_error("postgres://kbs@db.example/kbs?sslmode=require", None)
                .starts_with("sslmode=require needs the CA")
        );
        assert_eq!(
            config_error(
                "postgres://kbs@db.example/kbs?sslmode=require",
                Some(b"junk")
            ),
            "the database CA file holds no certificate"
        );
        assert_eq!(
            config_error("not a url at all ===", None),
            "the database url is not a postgres:// url or key=value string"
        );
    }

    #[test]
    fn an_unreachable_local_database_is_unavailable_within_the_wait() {
        // Port 1 on loopback: nothing listens there.
        let start = std::time::Instant::now();
        let err = PgStore::connect(
            options("postgres://kbs@127.0.0.1:1/kbs", None),
            Duration::from_millis(600),
        )
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Unavailable { reason } if reason.contains("error connecting to server")),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
