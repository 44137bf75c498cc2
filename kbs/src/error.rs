//! The broker's errors and, in one place, how each becomes an HTTP problem response
//! (`{"type": …, "detail": …}`) with its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::admin::AdminAuthError;
use crate::init_data::InitDataError;
use crate::jwe::JweError;
use crate::policy::PolicyError;
use crate::session::SessionError;
use crate::store::{InvalidResourcePath, StoreError};
use crate::token::TokenError;
use crate::verifier::VerifierError;

/// Prefix of every error `type`, the same as Trustee's.
const TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// Everything a broker request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// The request body is not the JSON this endpoint takes.
    #[error("request body is malformed")]
    MalformedRequest(#[source] serde_json::Error),
    /// The request body is larger than the configured limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The request body could not be read.
    #[error("request body could not be read")]
    Body(#[source] axum::Error),
    /// The request took longer than the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The client speaks another protocol version.
    #[error("protocol version {version:?} is not supported, this broker speaks 0.4.0")]
    ProtocolVersion {
        /// The version the client sent.
        version: String,
    },
    /// The broker does not accept evidence of this TEE type.
    #[error("tee {tee:?} is not accepted by this broker")]
    UnsupportedTee {
        /// The TEE the client named.
        tee: String,
    },
    /// No session cookie on a request that needs one.
    #[error("no session cookie")]
    MissingCookie,
    /// The session cookie names no usable session.
    #[error("session is not usable")]
    Session(#[source] SessionError),
    /// The runtime data names a nonce other than this session's challenge.
    #[error("runtime data nonce is not this session's challenge")]
    NonceMismatch,
    /// The TEE public key in the runtime data is not usable.
    #[error("tee public key is not usable")]
    TeeKey(#[source] JweError),
    /// The evidence did not verify.
    #[error("evidence verification failed")]
    Evidence(#[source] VerifierError),
    /// The init-data of the request is malformed, or does not match the evidence.
    #[error("init-data refused")]
    InitData(#[source] InitDataError),
    /// The token for this attestation would be longer than a bearer token may be (the
    /// init-data `[data]` table it carries is too large).
    #[error("the attestation token would be {len} bytes, more than the {max} a token may have")]
    TokenTooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The attestation policy refused the evidence.
    #[error("attestation policy denied: {}", reasons.join("; "))]
    AttestationDenied {
        /// The reasons the policy gave.
        reasons: Vec<String>,
    },
    /// A resource request carried neither an attested session nor a token.
    #[error("attestation token not found")]
    TokenNotFound,
    /// The bearer token is not valid.
    #[error("attestation token is not valid")]
    Token(#[source] TokenError),
    /// The resource policy refused.
    #[error("access denied by policy{}", reasons_suffix(reasons))]
    PolicyDeny {
        /// The reasons the policy gave (possibly none).
        reasons: Vec<String>,
    },
    /// The resource path is not valid.
    #[error("resource path is not valid")]
    ResourcePath(#[source] InvalidResourcePath),
    /// No resource at that path.
    #[error("resource not found")]
    ResourceNotFound,
    /// No reference value of that name.
    #[error("no reference value named {name:?}")]
    ReferenceValueNotFound {
        /// The name asked for (at most 100 characters of it).
        name: String,
    },
    /// A reference-value message (Trustee's RVPS format) is not one this broker takes.
    #[error("reference values are not valid")]
    InvalidReferenceValues(#[source] crate::rvps::RvpsError),
    /// The admin request is not authenticated.
    #[error("admin authentication failed")]
    AdminAuth(#[source] AdminAuthError),
    /// An uploaded policy is not valid.
    #[error("policy is not valid")]
    InvalidPolicy(#[source] PolicyError),
    /// A stored policy failed at evaluation.
    #[error("policy evaluation failed")]
    PolicyEval(#[source] PolicyError),
    /// The broker's storage failed.
    #[error("storage failed")]
    Store(#[source] StoreError),
    /// The shared policies changed under every appraisal of one attestation: nothing was
    /// recorded, the guest should attest again.
    #[error(
        "the policies changed during every appraisal of this attestation ({appraisals} times); attest again"
    )]
    PoliciesChanging {
        /// How many times it was appraised.
        appraisals: u32,
    },
    /// The broker cannot serve now (`GET /ready`): its store is unreachable or not migrated.
    #[error("not ready")]
    NotReady(#[source] StoreError),
    /// Encrypting the resource failed.
    #[error("resource encryption failed")]
    Encrypt(#[source] JweError),
    /// Issuing the token failed.
    #[error("token issuance failed")]
    Issue(#[source] TokenError),
    /// The worker running the request failed (it panicked or was cancelled).
    #[error("request worker failed")]
    Task(#[source] tokio::task::JoinError),
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
}

/// `: reason; reason` or nothing.
fn reasons_suffix(reasons: &[String]) -> String {
    if reasons.is_empty() {
        String::new()
    } else {
        format!(": {}", reasons.join("; "))
    }
}

impl KbsError {
    /// The HTTP status and the problem `type` name of this error.
    fn status_and_type(&self) -> (StatusCode, &'static str) {
        use KbsError as E;
        match self {
            E::MalformedRequest(_) | E::Body(_) => (StatusCode::BAD_REQUEST, "MalformedRequest"),
            E::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
            E::Timeout => (StatusCode::REQUEST_TIMEOUT, "Timeout"),
            E::ProtocolVersion { .. } => (StatusCode::BAD_REQUEST, "ProtocolVersion"),
            E::UnsupportedTee { .. } => (StatusCode::BAD_REQUEST, "UnsupportedTee"),
            E::MissingCookie => (StatusCode::UNAUTHORIZED, "MissingCookie"),
            E::Session(SessionError::Full) => (StatusCode::SERVICE_UNAVAILABLE, "TooManySessions"),
            E::Session(SessionError::ClientLimit) => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManySessionsFromClient")
            }
            E::Session(_) => (StatusCode::UNAUTHORIZED, "InvalidSession"),
            E::NonceMismatch => (StatusCode::UNAUTHORIZED, "NonceMismatch"),
            E::TeeKey(_) => (StatusCode::BAD_REQUEST, "InvalidTeePubKey"),
            E::Evidence(_) => (StatusCode::UNAUTHORIZED, "AttestationFailed"),
            E::InitData(err) if err.is_malformed_request() => {
                (StatusCode::BAD_REQUEST, "InvalidInitData")
            }
            E::InitData(_) => (StatusCode::UNAUTHORIZED, "InitDataMismatch"),
            E::TokenTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "TokenTooLarge"),
            E::AttestationDenied { .. } => (StatusCode::UNAUTHORIZED, "AttestationDenied"),
            E::TokenNotFound => (StatusCode::UNAUTHORIZED, "TokenNotFound"),
            E::Token(_) => (StatusCode::UNAUTHORIZED, "TokenVerification"),
            // Trustee answers 401 here too (see the wire capture), not the spec's 403.
            E::PolicyDeny { .. } => (StatusCode::UNAUTHORIZED, "PolicyDeny"),
            E::ResourcePath(_) => (StatusCode::BAD_REQUEST, "InvalidResourcePath"),
            E::ResourceNotFound => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            E::ReferenceValueNotFound { .. } => (StatusCode::NOT_FOUND, "ReferenceValueNotFound"),
            E::InvalidReferenceValues(_) => (StatusCode::BAD_REQUEST, "InvalidReferenceValues"),
            E::AdminAuth(AdminAuthError::TooManyTokens) => {
                (StatusCode::SERVICE_UNAVAILABLE, "TooManyAdminTokens")
            }
            E::AdminAuth(_) => (StatusCode::UNAUTHORIZED, "AdminAuth"),
            E::InvalidPolicy(_) => (StatusCode::BAD_REQUEST, "InvalidPolicy"),
            E::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            E::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "NotReady"),
            E::PoliciesChanging { .. } => (StatusCode::SERVICE_UNAVAILABLE, "PoliciesChanging"),
            E::Store(StoreError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable")
            }
            E::PolicyEval(_) | E::Store(_) | E::Encrypt(_) | E::Issue(_) | E::Task(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
        }
    }

    /// The message with its chain of causes. Internal errors say only what failed: their causes
    /// (paths, crypto details) are logged, not sent; an unreachable database (503) says why, so
    /// that the client knows to retry elsewhere or later.
    fn detail(&self) -> String {
        let mut detail = self.to_string();
        let (status, _) = self.status_and_type();
        let says_why = matches!(
            self,
            KbsError::Store(StoreError::Unavailable { .. })
                | KbsError::NotReady(StoreError::Unavailable { .. })
        );
        if !status.is_server_error() || says_why {
            let mut source = std::error::Error::source(self);
            while let Some(cause) = source {
                detail.push_str(": ");
                detail.push_str(&cause.to_string());
                source = cause.source();
            }
        }
        detail
    }
}

impl IntoResponse for KbsError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_type();
        let detail = self.detail();
        if status.is_server_error() {
            tracing::error!(error = ?self, status = status.as_u16(), "request failed");
        } else {
            tracing::info!(error = %detail, status = status.as_u16(), "request refused");
        }
        let body = serde_json::json!({"type": format!("{TYPE_PREFIX}{kind}"), "detail": detail});
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_includes_the_cause_for_client_errors_only() {
        let refused = KbsError::Evidence(VerifierError::ReportDataMismatch);
        assert_eq!(refused.status_and_type().0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.detail(),
            "evidence verification failed: report data does not bind this session's nonce and tee key"
        );
        let internal = KbsError::Store(StoreError::ResourceTooLarge);
        assert_eq!(
            internal.status_and_type().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(internal.detail(), "storage failed");
    }

    #[test]
    fn snp_refusal_reaches_the_guest_with_its_reason() {
        let refused = KbsError::Evidence(VerifierError::SnpRefused(
            crate::SnpRefusal::TcbBelowMinimum {
                product: crate::SnpProduct::Milan,
                component: "snp",
                reported: 8,
                minimum: 9,
            },
        ));
        assert_eq!(
            refused.status_and_type(),
            (StatusCode::UNAUTHORIZED, "AttestationFailed")
        );
        assert_eq!(
            refused.detail(),
            "evidence verification failed: snp report refused: milan reported tcb snp svn 8 is \
             below the minimum 9"
        );
    }

    #[test]
    fn policies_changing_under_an_attestation_is_a_503_of_its_own() {
        let churn = KbsError::PoliciesChanging { appraisals: 4 };
        assert_eq!(
            churn.status_and_type(),
            (StatusCode::SERVICE_UNAVAILABLE, "PoliciesChanging")
        );
        assert_eq!(
            churn.detail(),
            "the policies changed during every appraisal of this attestation (4 times); attest \
             again"
        );
    }

    #[test]
    fn an_unreachable_store_is_503_with_its_reason() {
        let down = KbsError::Store(StoreError::Unavailable {
            reason: "error connecting to server: Connection refused (os error 111)".into(),
        });
        assert_eq!(
            down.status_and_type(),
            (StatusCode::SERVICE_UNAVAILABLE, "StoreUnavailable")
        );
        assert_eq!(
            down.detail(),
            "storage failed: state database is unavailable: error connecting to server: \
             Connection refused (os error 111)"
        );
    }

    #[test]
    fn init_data_is_400_when_malformed_and_401_when_the_evidence_does_not_bind_it() {
        let malformed = KbsError::InitData(InitDataError::UnsupportedFormat {
            format: "json".into(),
        });
        assert_eq!(
            malformed.status_and_type(),
            (StatusCode::BAD_REQUEST, "InvalidInitData")
        );
        let mismatch = KbsError::InitData(InitDataError::Mismatch {
            field: "MRCONFIGID",
        });
        assert_eq!(
            mismatch.status_and_type(),
            (StatusCode::UNAUTHORIZED, "InitDataMismatch")
        );
        assert_eq!(
            mismatch.detail(),
            "init-data refused: init-data does not match the MRCONFIGID bound into the evidence"
        );
        let unbound = KbsError::InitData(InitDataError::Unbound {
            tee: "sample".into(),
        });
        assert_eq!(unbound.status_and_type().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn denial_lists_reasons() {
        let denied = KbsError::AttestationDenied {
            reasons: vec!["a".into(), "b".into()],
        };
        assert_eq!(denied.detail(), "attestation policy denied: a; b");
    }
}
