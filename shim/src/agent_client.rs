//! The host's client for the guest agent API.
//!
//! Over virtio-serial the host holds a connected stream from the moment QEMU starts, long before
//! the agent runs; over vsock it must retry connecting until the agent listens. Either way the
//! client waits for the agent's hello, within a deadline, before it sends a request; then the two
//! transports are the same ttrpc client.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tracing::debug;
use tsuba_protocols::agent::{
    AttestationClient, CheckRequest, CheckResponse, DiagnosticReportRequest,
    DiagnosticReportResponse, HELLO, HealthClient, ImageClient, MAX_IMAGE_REFERENCE,
    PullImageRequest, PullImageResponse, VersionRequest, VersionResponse,
};
use ttrpc::asynchronous::Client;
use ttrpc::asynchronous::transport::Socket;

/// Talking to the agent failed.
#[derive(Debug, Error)]
pub enum AgentClientError {
    /// The agent did not say hello in time.
    #[error("the guest agent did not come up within {0:?}")]
    Timeout(Duration),
    /// Something other than the agent answered.
    #[error("the peer is not a tsuba agent of this protocol version (it sent {0:?})")]
    BadHello(String),
    /// The connection closed before the hello.
    #[error("the agent connection closed before the agent said hello")]
    Closed,
    /// Reading or connecting failed.
    #[error("agent connection failed")]
    Io(#[source] std::io::Error),
    /// An image reference the agent would refuse anyway.
    #[error("image reference is empty or longer than {MAX_IMAGE_REFERENCE} bytes")]
    ImageReference,
    /// A call failed.
    #[error("agent call {method} failed")]
    Rpc {
        /// The method.
        method: &'static str,
        /// ttrpc's error.
        #[source]
        source: ttrpc::Error,
    },
}

/// A connected agent.
#[derive(Clone)]
pub struct AgentClient {
    health: HealthClient,
    attestation: AttestationClient,
    image: ImageClient,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Waits up to `timeout` for the agent's hello on an already connected `stream`, then
    /// returns a client over it.
    pub async fn handshake<S>(mut stream: S, timeout: Duration) -> Result<Self, AgentClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
    {
        let mut hello = [0u8; HELLO.len()];
        match tokio::time::timeout(timeout, stream.read_exact(&mut hello)).await {
            Err(_) => return Err(AgentClientError::Timeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AgentClientError::Closed);
            }
            Ok(Err(e)) => return Err(AgentClientError::Io(e)),
            Ok(Ok(_)) => {}
        }
        if &hello != HELLO {
            return Err(AgentClientError::BadHello(
                String::from_utf8_lossy(&hello).into_owned(),
            ));
        }
        debug!("agent said hello");
        let client = Client::new(Socket::new(stream));
        Ok(AgentClient {
            health: HealthClient::new(client.clone()),
            attestation: AttestationClient::new(client.clone()),
            image: ImageClient::new(client),
        })
    }

    /// Connects to the agent over vsock, retrying until it listens, all within `timeout`.
    pub async fn connect_vsock(
        cid: u32,
        port: u32,
        timeout: Duration,
    ) -> Result<Self, AgentClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let addr = tokio_vsock::VsockAddr::new(cid, port);
        let stream = loop {
            match tokio_vsock::VsockStream::connect(addr).await {
                Ok(stream) => break stream,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    debug!(%e, "last vsock connect attempt failed");
                    return Err(AgentClientError::Timeout(timeout));
                }
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        Self::handshake(stream, left).await
    }

    /// `Health.Check`.
    pub async fn check(&self, timeout: Duration) -> Result<CheckResponse, AgentClientError> {
        self.health
            .check(context(timeout), &CheckRequest::new())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Health.Check",
                source,
            })
    }

    /// `Health.Version`.
    pub async fn version(&self, timeout: Duration) -> Result<VersionResponse, AgentClientError> {
        self.health
            .version(context(timeout), &VersionRequest::new())
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Health.Version",
                source,
            })
    }
}

impl AgentClient {
    /// `Attestation.GetDiagnosticReport`: the guest's evidence for `nonce` (report data derived
    /// by [`tsuba_protocols::agent::diagnostic_report_data`]).
    pub async fn diagnostic_report(
        &self,
        nonce: &[u8],
        timeout: Duration,
    ) -> Result<DiagnosticReportResponse, AgentClientError> {
        let mut req = DiagnosticReportRequest::new();
        req.nonce = nonce.to_vec();
        self.attestation
            .get_diagnostic_report(context(timeout), &req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Attestation.GetDiagnosticReport",
                source,
            })
    }
}

impl AgentClient {
    /// `Image.Pull`: the guest attests to its (measured) key broker, then pulls, verifies,
    /// decrypts and unpacks `image` in guest memory. The answer says what was unpacked, never
    /// its content. A broker refusal is an [`AgentClientError::Rpc`] whose status is
    /// `PERMISSION_DENIED` with the broker's reason.
    pub async fn pull_image(
        &self,
        image: &str,
        timeout: Duration,
    ) -> Result<PullImageResponse, AgentClientError> {
        if image.is_empty() || image.len() > MAX_IMAGE_REFERENCE {
            return Err(AgentClientError::ImageReference);
        }
        let mut req = PullImageRequest::new();
        image.clone_into(&mut req.image);
        self.image
            .pull(context(timeout), &req)
            .await
            .map_err(|source| AgentClientError::Rpc {
                method: "Image.Pull",
                source,
            })
    }
}

fn context(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn times_out_when_no_hello_comes() {
        let (host, _guest) = tokio::io::duplex(64);
        let err = AgentClient::handshake(host, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn refuses_a_peer_that_is_not_the_agent() {
        let (host, mut guest) = tokio::io::duplex(64);
        guest.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::BadHello(ref got) if got.starts_with("SSH-2.0")));
    }

    #[tokio::test]
    async fn pull_refuses_references_the_agent_would_refuse_without_a_call() {
        // No agent on the other end: a call would hang until the timeout, so a quick error
        // shows the request was never sent.
        let (host, mut guest) = tokio::io::duplex(4096);
        guest.write_all(HELLO).await.unwrap();
        let client = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap();
        let long = "r/".to_owned() + &"a".repeat(MAX_IMAGE_REFERENCE);
        for bad in ["", long.as_str()] {
            let err = client
                .pull_image(bad, Duration::from_secs(30))
                .await
                .unwrap_err();
            assert!(matches!(err, AgentClientError::ImageReference), "{err}");
        }
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_a_timeout() {
        let (host, guest) = tokio::io::duplex(64);
        drop(guest);
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Closed), "{err}");
    }

    #[tokio::test]
    async fn a_partial_hello_then_close_is_closed() {
        let (host, mut guest) = tokio::io::duplex(64);
        guest.write_all(&HELLO[..5]).await.unwrap();
        drop(guest);
        let err = AgentClient::handshake(host, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, AgentClientError::Closed), "{err}");
    }
}
