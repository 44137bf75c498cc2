//! The tsuba key broker service.
//!
//! Speaks the Confidential Containers KBS protocol v0.4.0 (auth, attest, resource) byte-compatibly
//! with Trustee's broker and guest-components' client. It verifies SNP, TDX and (only when
//! explicitly enabled) simulated evidence, appraises it against reference values with a Rego
//! policy, and releases resources encrypted to the attested guest's ephemeral key.
//!
//! [`Broker`] holds the protocol logic, [`router`] puts it behind HTTP and [`serve`] runs it over
//! HTTPS (or plain HTTP on loopback, when asked for by name).
//!
//! SNP and TDX evidence is accepted in tsuba's own JSON and in guest-components' (the `sev`
//! crate's report form with its certificate list; the quote with its event log). Admin tokens
//! are single-use within their lifetime. The router serves per-endpoint request counts, failures
//! by status class and latency histograms at `GET /metrics` (Prometheus text), and
//! [`RunningServer::run_until`] stops the server gracefully on a signal. `GET /health` answers
//! while the process runs, `GET /ready` only while its store can serve.
//!
//! State lives behind [`StateStore`]: a local folder ([`FolderStore`], the default) or, with the
//! `postgres` feature, a PostgreSQL database shared by any number of replicas (`PgStore`), where
//! sessions, nonces and used admin tokens live too, so that any step of the exchange can land
//! on any replica.

#![forbid(unsafe_code)]

mod admin;
mod admin_client;
#[cfg(feature = "postgres")]
mod at_rest;
mod binding;
mod broker;
#[cfg(feature = "postgres")]
mod challenge;
mod error;
mod http;
mod init_data;
mod jwe;
mod policy;
#[cfg(feature = "postgres")]
mod postgres;
mod rvps;
mod server;
mod session;
mod setup;
mod store;
mod token;
mod verifier;

pub use admin::{AdminAuth, AdminAuthError, TokenUse, sign_admin_token};
pub use admin_client::{AdminClient, AdminClientError, generate_admin_key};
#[cfg(feature = "postgres")]
pub use at_rest::{AtRestKeyError, AtRestKeys};
pub use binding::{BindingDigest, REPORT_DATA_LEN};
pub use broker::{Broker, BrokerConfig, PROTOCOL_VERSION, PolicyKind, rotate_token_key};
pub use error::KbsError;
pub use http::{HttpLimits, router};
pub use init_data::InitDataError;
pub use jwe::{FlattenedJwe, JweError};
/// TEE types of the KBS protocol (re-exported from `kbs-types`).
pub use kbs_types::Tee;
pub use policy::{DEFAULT_ATTESTATION_POLICY, DEFAULT_RESOURCE_POLICY, PolicyError};
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgStore, SCHEMA_VERSION};
pub use rvps::RvpsError;
pub use server::{RunningServer, ServerError, Transport, load_pem, serve};
pub use session::{NewSession, SessionError, SessionId};
pub use setup::{SetupError, SnpTcbOption, VerifierOptions, build_verifiers};
pub use store::{ResourcePath, StateStore, Store as FolderStore, StoreError, copy_state};
pub use token::{
    AnnotatedEvidence, Appraisal, Attested, EAR_PROFILE, PRIMARY_SUBMOD, RuntimeDataClaims, Status,
    TokenClaims, TokenError, TrustVector, VerifierId,
};
pub use verifier::{
    Claims, EvidenceTrust, SimulatedRootsRefused, SnpCrlError, SnpMinTcbError, SnpProduct,
    SnpRefusal, SnpSetupError, SnpVerifier, TdxSetupError, TdxVerifier, Verifier, VerifierError,
    VerifierSet, parse_snp_min_tcb,
};
