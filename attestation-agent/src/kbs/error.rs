//! Errors of the KBS client.

use super::tee_key::TeeKeyError;
use super::uri::InvalidResourceUri;

/// Why fetching a resource failed.
#[derive(Debug, thiserror::Error)]
pub enum KbsClientError {
    /// The broker could not be reached or the connection failed (after retries).
    #[error("broker at {url} could not be reached")]
    Transport {
        /// The URL requested.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The broker refused the request. `kind` and `detail` are the broker's own explanation
    /// (for an attestation refusal, which check failed).
    #[error("broker refused {step} with {status}: {kind}: {detail}")]
    Refused {
        /// Which protocol step (`auth`, `attest`, `resource`).
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// The last path segment of the problem `type`, e.g. `AttestationDenied`.
        kind: String,
        /// The problem `detail`.
        detail: String,
    },
    /// The broker's answer does not follow the protocol.
    #[error("broker answered {step} with a malformed response: {what}")]
    Protocol {
        /// Which step.
        step: &'static str,
        /// What was wrong.
        what: &'static str,
    },
    /// The attester could not produce evidence.
    #[error("attester failed to produce evidence")]
    Attester(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Key generation or JWE decryption failed.
    #[error("resource could not be decrypted")]
    TeeKey(#[from] TeeKeyError),
    /// The resource URI is not valid.
    #[error(transparent)]
    Uri(#[from] InvalidResourceUri),
    /// The client configuration is invalid.
    #[error("kbs client configuration is invalid")]
    Config(#[source] reqwest::Error),
}

impl KbsClientError {
    /// Whether retrying the same request may succeed (connection failures, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}
