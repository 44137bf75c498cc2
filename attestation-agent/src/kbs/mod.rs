//! The KBS protocol client (request, challenge, attestation, response) and resource fetches by
//! `kbs:///repo/type/tag` URI.

mod client;
mod error;
mod evidence;
mod key_provider;
mod tee_key;
mod trust;
mod uri;

pub use client::{KbsClient, KbsClientConfig};
pub use error::KbsClientError;
pub use evidence::{
    AttesterEvidence, EvidenceProvider, EvidenceShapeError, InsecureSampleEvidence,
};
pub use key_provider::{
    KbsKeyProvider, RegistryAuthError, credentials_for_image, fetch_registry_credentials,
};
pub use tee_key::{TeeKey, TeeKeyError, TeeKeyKind};
pub use trust::{BrokerTrust, PinMismatch, SpkiPin, TrustError};
pub use uri::{InvalidResourceUri, ResourceUri};
