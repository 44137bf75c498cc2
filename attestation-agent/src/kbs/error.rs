//! Errors of the KBS client.

use super::tee_key::TeeKeyError;
use super::trust::TrustError;
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
    /// The server at the broker's address is not the broker: its TLS certificate is not the
    /// pinned key or does not chain to the trusted CA. Nothing was sent to it.
    #[error("the server at {url} is not the trusted key broker (TLS authentication failed)")]
    Untrusted {
        /// The URL requested.
        url: String,
        /// The TLS failure.
        #[source]
        source: reqwest::Error,
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
    /// The broker trust (CA or pin) is unusable.
    #[error("the key broker's trust anchor is unusable")]
    Trust(#[source] TrustError),
}

impl KbsClientError {
    /// A failed request: [`KbsClientError::Untrusted`] when TLS refused the server's
    /// certificate (never retried), else [`KbsClientError::Transport`].
    pub(crate) fn transport(url: &str, source: reqwest::Error) -> Self {
        let url = url.to_owned();
        if is_certificate_failure(&source) {
            Self::Untrusted { url, source }
        } else {
            Self::Transport { url, source }
        }
    }

    /// Whether retrying the same request may succeed (connection failures, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Refused { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

/// Whether a rustls certificate error is anywhere in `error`'s chain (io errors hide their inner
/// error from `source()`, so they are opened with `get_ref`).
fn is_certificate_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = e.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_certificate_failure(inner)
        {
            return true;
        }
        next = e.source();
    }
    false
}
