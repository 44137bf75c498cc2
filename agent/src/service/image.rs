//! `Image`: pulls inside the guest. The host names the image; the rest is measured configuration.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::warn;
use tsuba_protocols::agent::{Image, PullImageRequest, PullImageResponse};
use ttrpc::asynchronous::TtrpcContext;

use crate::initdata::Gate;
use crate::pull::{GuestPullError, GuestPuller};
use tsuba_policy::AgentRequest;

/// The `Image` service over the guest's puller.
#[derive(Debug, Clone)]
pub struct ImageService {
    puller: Arc<GuestPuller>,
    gate: Arc<Gate>,
}

impl ImageService {
    /// A service over a puller shared with the Container service, each pull decided by `gate`.
    pub fn new(puller: Arc<GuestPuller>, gate: Arc<Gate>) -> Self {
        ImageService { puller, gate }
    }
}

/// The error and its causes on one line: the host sees why (the broker's reason for a refusal),
/// and the chain holds no key or content, only names, digests and the broker's words.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The one place pull errors become ttrpc codes (for Image.Pull and CreateContainer).
pub(crate) fn to_status(error: &GuestPullError) -> ttrpc::Error {
    let code = match error {
        _ if error.broker_refused() => ttrpc::Code::PERMISSION_DENIED,
        _ if error.broker_untrusted() => ttrpc::Code::UNAUTHENTICATED,
        GuestPullError::BadReference => ttrpc::Code::INVALID_ARGUMENT,
        GuestPullError::NotConfigured(_)
        | GuestPullError::NoAttester(_)
        | GuestPullError::InsecureBroker(_)
        | GuestPullError::Pull(tsuba_image_rs::PullError::CredentialsInTheClear { .. }) => {
            ttrpc::Code::FAILED_PRECONDITION
        }
        GuestPullError::Busy | GuestPullError::TooManyImages => ttrpc::Code::RESOURCE_EXHAUSTED,
        GuestPullError::Pull(tsuba_image_rs::PullError::Refused(_)) => {
            ttrpc::Code::PERMISSION_DENIED
        }
        GuestPullError::Client(_)
        | GuestPullError::Policy(_)
        | GuestPullError::PolicyTooLarge
        | GuestPullError::Broker(_)
        | GuestPullError::SignatureStorageFetch(_)
        | GuestPullError::SignatureStorage(_)
        | GuestPullError::RegistryAuth(_)
        | GuestPullError::Rootfs(..)
        | GuestPullError::Pull(_) => ttrpc::Code::UNAVAILABLE,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, chain(error)))
}

#[async_trait]
impl Image for ImageService {
    async fn pull(
        &self,
        _ctx: &TtrpcContext,
        req: PullImageRequest,
    ) -> ttrpc::Result<PullImageResponse> {
        self.gate
            .admit(
                AgentRequest::PullImage,
                || serde_json::json!({"image": req.image}),
            )
            .map_err(|e| e.to_status())?;
        // The pull future is not `Send` for every lifetime (a compiler limit with async
        // closures inside the KBS and registry clients), which ttrpc's handlers must be; so it
        // runs on a blocking thread, driven through the runtime's handle (the agent's main
        // thread keeps driving I/O and timers).
        let puller = Arc::clone(&self.puller);
        let runtime = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || runtime.block_on(puller.pull(&req.image)))
            .await
            .map_err(|e| {
                ttrpc::Error::RpcStatus(ttrpc::get_status(
                    ttrpc::Code::INTERNAL,
                    format!("image pull task failed: {e}"),
                ))
            })?;
        let summary = result.map_err(|error| {
            warn!(error = %chain(&error), "image pull failed");
            to_status(&error)
        })?;
        let mut resp = PullImageResponse::new();
        resp.manifest_digest = summary.manifest_digest;
        resp.layers = summary.layers;
        resp.unpacked_bytes = summary.unpacked_bytes;
        resp.entries = summary.entries;
        resp.rootfs = summary.rootfs.display().to_string();
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tsuba_attestation_agent::kbs::KbsClientError;

    fn code_and_message(error: &GuestPullError) -> (ttrpc::Code, String) {
        match to_status(error) {
            ttrpc::Error::RpcStatus(status) => (status.code(), status.message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_broker_refusal_is_permission_denied_with_the_brokers_reason() {
        let refused = GuestPullError::Broker(KbsClientError::Refused {
            step: "attest",
            status: 401,
            kind: "AttestationDenied".into(),
            detail: "measurement is not a reference value".into(),
        });
        let (code, message) = code_and_message(&refused);
        assert_eq!(code, ttrpc::Code::PERMISSION_DENIED);
        assert!(
            message.contains("measurement is not a reference value"),
            "{message}"
        );
        assert!(message.contains("AttestationDenied"), "{message}");
    }

    #[test]
    fn other_failures_get_their_own_codes() {
        let (code, message) = code_and_message(&GuestPullError::BadReference);
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
        assert!(message.contains("image reference"));
        let (code, message) =
            code_and_message(&GuestPullError::NotConfigured(crate::pull::NO_BROKER));
        assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(message.contains("aa.toml [token_configs.kbs] url"));
        let unreachable = GuestPullError::Broker(KbsClientError::Protocol {
            step: "auth",
            what: "no challenge",
        });
        assert_eq!(code_and_message(&unreachable).0, ttrpc::Code::UNAVAILABLE);
        let (code, message) = code_and_message(&GuestPullError::Rootfs(
            "/run/x".into(),
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        ));
        assert_eq!(code, ttrpc::Code::UNAVAILABLE);
        assert!(
            message.starts_with("cannot create the rootfs folder /run/x: "),
            "{message}"
        );
    }
}
